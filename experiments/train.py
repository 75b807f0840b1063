"""Single-process MetaMimic training: in-process Reverb, Acme EnvironmentLoop.

  python experiments/train.py --domain=point_mass --workdir=runs/point_mass

Demonstrations come from --demo_dir (train.h5 and held_out.h5, as written by
experiments/generate_demos.py) or are generated into the workdir on first use, keeping
the successful ones as generate_demos.py does. Held-out demonstrations are imitated
one-shot every --eval_every_env_steps; metrics go to the terminal, CSV and TensorBoard
under the workdir, with checkpoints that a re-run resumes.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import checkpointing
from metamimic_jax import demonstrations
from metamimic_jax import numerics
from metamimic_jax import training
from metamimic_jax import flags as config_flags
from metamimic_jax.environments import DOMAIN_NAMES

from absl import app
from absl import flags
from absl import logging

_DOMAIN = flags.DEFINE_enum('domain', 'point_mass', DOMAIN_NAMES, 'Domain to imitate in.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Logs, checkpoints and plots '
                               '(default: runs/<domain>).')
_DEMO_DIR = flags.DEFINE_string('demo_dir', None, 'Directory with train.h5 and '
                                'held_out.h5; default: generate into the workdir.')
_NUM_DEMOS = flags.DEFINE_integer(
    'num_demos', 200, 'Demos to record if none are given; the successful ones are kept.',
    lower_bound=2)
_MAX_ENV_STEPS = flags.DEFINE_integer('max_env_steps', 300_000, 'Actor steps to train.',
                                      lower_bound=1)
_MAX_WALL_MINUTES = flags.DEFINE_float('max_wall_minutes', 0.0,
                                       'Stop after this long (0: no limit).',
                                       lower_bound=0)
_EVAL_EVERY = flags.DEFINE_integer('eval_every_env_steps', 10_000,
                                   'Actor steps between evaluations.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_NUM_ENVS = flags.DEFINE_integer(
    'num_envs', 1, 'Training environments acting together, with one policy call a step '
    'for all of them (cheaper per step on a CPU).', lower_bound=1)
_AGENT = flags.DEFINE_enum(
    'agent', 'metamimic', training.AGENTS, "'task_only': the task-policy experiment's "
    'baseline, the same D4PG learner on the task reward alone, without demonstrations.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = config_flags.config_from_flags()
  if _AGENT.value == checkpointing.TASK_ONLY and not config.train_task_policy:
    raise app.UsageError('--agent=task_only trains the task policy: drop '
                         '--notrain_task_policy')
  settings = training.TrainSettings(
      domain=_DOMAIN.value, workdir=_WORKDIR.value or f'runs/{_DOMAIN.value}',
      demo_dir=_DEMO_DIR.value, num_demos=_NUM_DEMOS.value,
      max_env_steps=_MAX_ENV_STEPS.value, max_wall_minutes=_MAX_WALL_MINUTES.value,
      eval_every_env_steps=_EVAL_EVERY.value, seed=_SEED.value, agent=_AGENT.value,
      num_envs=_NUM_ENVS.value)
  try:
    results = training.run(settings, config)
  except (OSError, demonstrations.DemonstrationError, checkpointing.CheckpointError,
          numerics.NonFiniteError) as e:
    sys.exit(f'error: {e}')
  logging.info('Final held-out evaluation: %s', results)


if __name__ == '__main__':
  app.run(main)
