"""One learner process of a pod job: a scheduler runs it once per host.

  python launchpad_programs/learner_host.py --coordinator_address=HOST0:PORT \\
    --num_processes=N --process_id=I --replay_address=REVERB_HOST:PORT \\
    --workdir=WORKDIR --demo_dir=DEMO_DIR [--domain ... agent flags as imitate.py]

Every process gets the same flags but its own --process_id. Each samples its share of
every batch (batch_size / N) from the Reverb server at --replay_address, which actors
fill (the table of launchpad_programs/imitate.py's builder), and the step's gradients
are averaged over every host's devices. Process 0 alone serves `get_variables` on a
Courier server (--variable_port; its address is printed), logs, and checkpoints under
<workdir>/checkpoints/learner; re-running the same commands resumes from there.
--demo_dir's train.h5 gives the environment's spec. The job ends at --max_learner_steps,
or when any process gets SIGTERM or Ctrl-C: every process then stops after the same step
and process 0 checkpoints it. With --keep_serving process 0 then serves the final
variables until SIGTERM or Ctrl-C.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import flags as config_flags
from metamimic_jax import learner_host
from metamimic_jax import multihost
from metamimic_jax import numerics
from metamimic_jax.environments import DOMAIN_NAMES

from absl import app
from absl import flags

_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, the same for every process '
    '(needed with --num_processes > 1).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 1, 'Learner processes (hosts) '
                                      'in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', 0, 'This process, 0 to '
                                   '--num_processes - 1.')
_REPLAY_ADDRESS = flags.DEFINE_string('replay_address', None, 'host:port of the Reverb '
                                      'server the actors fill.', required=True)
_DOMAIN = flags.DEFINE_enum('domain', 'point_mass', DOMAIN_NAMES,
                            "Domain (the actors').")
_WORKDIR = flags.DEFINE_string('workdir', None, "Process 0's logs and checkpoints "
                               '(default: runs/learner_host_<domain>).')
_DEMO_DIR = flags.DEFINE_string('demo_dir', None, "The actors' demonstrations (train.h5, "
                                'held_out.h5; default: <workdir>/demos).')
_VARIABLE_PORT = flags.DEFINE_integer('variable_port', 0, "Port of process 0's variable "
                                      'server (0: any free port).', lower_bound=0)
_MAX_LEARNER_STEPS = flags.DEFINE_integer('max_learner_steps', None, 'Stop at this '
                                          'learner step (default: never).', lower_bound=1)
_KEEP_SERVING = flags.DEFINE_boolean('keep_serving', False, 'After the last step, process '
                                     '0 serves the final variables until SIGTERM or '
                                     'Ctrl-C.')
_CHECKPOINT_MINUTES = flags.DEFINE_float('checkpoint_minutes', 5.0, 'Minutes between '
                                         'checkpoints (the first after at most one).',
                                         lower_bound=0)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed (of the initial parameters).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    processes = multihost.ProcessSettings(_COORDINATOR_ADDRESS.value,
                                          _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    sys.exit(f'error: {e}')
  config = config_flags.config_from_flags()
  workdir = os.path.abspath(_WORKDIR.value or f'runs/learner_host_{_DOMAIN.value}')
  settings = learner_host.LearnerHostSettings(
      replay_address=_REPLAY_ADDRESS.value, domain=_DOMAIN.value, workdir=workdir,
      demo_dir=os.path.abspath(_DEMO_DIR.value or os.path.join(workdir, 'demos')),
      variable_port=_VARIABLE_PORT.value, max_learner_steps=_MAX_LEARNER_STEPS.value,
      keep_serving=_KEEP_SERVING.value, checkpoint_minutes=_CHECKPOINT_MINUTES.value,
      seed=_SEED.value)
  try:
    learner_host.run(settings, processes, config)
  except (learner_host.StartError, ValueError, numerics.NonFiniteError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
