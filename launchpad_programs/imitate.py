"""Distributed MetaMimic: replay, counter, learner, actors, evaluators and a coordinator.

  python launchpad_programs/imitate.py --lp_launch_type=local_mp

Runs the paper's domain (Jaco stacking from features) when it is available, else the
fast point-mass domain (--domain=point_mass). Demonstrations are generated on first use
into <workdir>/demos unless --demo_dir is given, keeping the successful ones. The run stops by itself at
--max_actor_steps, and re-running the same command resumes from the workdir.

The launcher supervises the nodes (metamimic_jax/supervision.py): a dead actor or
evaluator is restarted in place; when another node dies, or on Ctrl-C / SIGTERM, it
checkpoints what is still alive, stops every node and exits non-zero (130 / 143 on a
signal).
"""

import os
import signal
import sys
from typing import Callable, Collection, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import checkpointing
from metamimic_jax import demonstrations
from metamimic_jax import distributed
from metamimic_jax import flags as config_flags
from metamimic_jax import sizing
from metamimic_jax import supervision
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import DOMAIN_NAMES
from metamimic_jax.environments import make_domain

from absl import app
from absl import flags
from absl import logging
import launchpad as lp
from launchpad.nodes.python import local_multi_processing
import reverb


def _default_domain() -> str:
  try:
    make_domain('jaco_stack')
    return 'jaco_stack'
  except ImportError:
    return 'point_mass'


_DOMAIN = flags.DEFINE_enum('domain', None, DOMAIN_NAMES,
                            'Domain to imitate in (default: jaco_stack if available).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Logs, checkpoints, replay and report '
                               '(default: runs/imitate_<domain>).')
_DEMO_DIR = flags.DEFINE_string('demo_dir', None, 'Directory with train.h5 and '
                                'held_out.h5 (default: generated into <workdir>/demos).')
_NUM_DEMOS = flags.DEFINE_integer(
    'num_demos', 200, 'Demos to record if none are given; the successful ones are kept.',
    lower_bound=2)
_NUM_ACTORS = flags.DEFINE_integer('num_actors', None, 'Actor nodes (default: one per '
                                    'core beside the learner\'s).', lower_bound=1)
_ENVS_PER_ACTOR = flags.DEFINE_integer(
    'envs_per_actor', 1, 'Environments each actor steps together, with one policy call '
    'a step for all of them (cheaper per step on a CPU).', lower_bound=1)
_COLOCATE_ACTORS = flags.DEFINE_boolean('colocate_actors', False,
                                        'Run all actors as threads of one process.')
_MAX_ACTOR_STEPS = flags.DEFINE_integer(
    'max_actor_steps', None, 'Stop once actors took this many steps (default: by '
    f'preset, {sizing.DEFAULT_MAX_ACTOR_STEPS}).', lower_bound=1)
_MIN_SIGMA = flags.DEFINE_float('min_sigma', 0.1, 'Smallest actor exploration sigma.',
                                lower_bound=0)
_MAX_SIGMA = flags.DEFINE_float('max_sigma', 0.4, 'Largest actor exploration sigma.',
                                lower_bound=0)
_EVAL_EVERY_SECONDS = flags.DEFINE_float('eval_every_seconds', 60.0,
                                         'Least time between evaluations.', lower_bound=0)
_EVAL_EVERY_LEARNER_STEPS = flags.DEFINE_integer(
    'eval_every_learner_steps', 1000, 'Least learner steps between evaluations.',
    lower_bound=0)
_PROGRESS_SECONDS = flags.DEFINE_float('progress_seconds', 30.0,
                                        'Seconds between progress lines.', lower_bound=1)
_CHECKPOINT_MINUTES = flags.DEFINE_float(
    'checkpoint_minutes', 5.0, 'Minutes between checkpoints (the first comes after at '
    'most a minute).', lower_bound=0)
_LEARNER_KEEPS_FREED_MEMORY = flags.DEFINE_enum(
    'learner_keeps_freed_memory', 'auto', ['auto', 'yes', 'no'],
    "Whether the learner's malloc keeps the memory it frees instead of returning it "
    '(faster steps, a larger process); auto: for images and the large torso.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')


def make_program(settings: distributed.ProgramSettings, config: MetaMimicConfig,
                 train_demos: Sequence[demonstrations.Demonstration],
                 colocate_actors: bool = False
                 ) -> Tuple[lp.Program, Callable[[Collection[str]], str]]:
  """The program graph, and the launcher's checkpoint of its live stateful nodes; every
  node builds its parts through the MetaMimicBuilder."""
  builder = MetaMimicBuilder(config, make_domain(settings.domain))
  spec = distributed.environment_spec(builder, train_demos)

  program = lp.Program('metamimic')
  with program.group('replay'):
    replay = program.add_node(lp.ReverbNode(
        lambda: builder.make_replay_tables(
            spec, transitions_per_item=settings.envs_per_actor),
        checkpoint_ctor=lambda: reverb.checkpointers.DefaultCheckpointer(
            os.path.join(settings.workdir, 'checkpoints', 'replay'))))
  with program.group('counter'):
    counter = program.add_node(lp.CourierNode(
        distributed.CheckpointedCounter, settings, config))
  with program.group('learner'):
    learner = program.add_node(lp.CourierNode(
        distributed.LearnerNode, settings, config, replay, counter))
  with program.group('actor'):
    actors = [lp.CourierNode(distributed.ActorNode, settings, config, i, replay, learner,
                             counter) for i in range(settings.num_actors)]
    if colocate_actors:
      program.add_node(lp.MultiThreadingColocation(actors))
    else:
      for actor in actors:
        program.add_node(actor)
  with program.group('evaluator'):
    evaluators = [program.add_node(lp.CourierNode(
        distributed.EvaluatorNode, settings, config, policy, learner, counter))
                  for policy in ('imitation', 'task')[:1 + config.train_task_policy]]
  with program.group('coordinator'):
    program.add_node(lp.CourierNode(distributed.Coordinator, settings, replay, counter,
                                    learner, evaluators))
  return program, distributed.checkpoint_live_nodes(replay, counter, learner)


_GROUPS = ('replay', 'counter', 'learner', 'actor', 'evaluator', 'coordinator')
# Nodes that hold nothing a checkpoint keeps: when one dies it is started again.
_STATELESS_GROUPS = ('actor', 'evaluator')


def _node_env(group: str):
  """Each process names its group; only the learner may take a GPU."""
  env = {sizing.NODE_ENV: group}
  if group != 'learner':
    env['CUDA_VISIBLE_DEVICES'] = ''
  return env


def _settings_from_flags(preset: str) -> distributed.ProgramSettings:
  domain = _DOMAIN.value or _default_domain()
  workdir = _WORKDIR.value or os.path.join('runs', f'imitate_{domain}')
  if _MIN_SIGMA.value > _MAX_SIGMA.value:
    raise app.UsageError('--min_sigma must not exceed --max_sigma')
  cpus = os.cpu_count()
  num_actors = _NUM_ACTORS.value or sizing.default_num_actors(cpus)
  try:
    sizing.check_num_actors(num_actors, cpus)
  except ValueError as e:
    sys.exit(f'error: {e}')
  return distributed.ProgramSettings(
      domain=domain, workdir=os.path.abspath(workdir),
      demo_dir=os.path.abspath(_DEMO_DIR.value or os.path.join(workdir, 'demos')),
      num_actors=num_actors, envs_per_actor=_ENVS_PER_ACTOR.value,
      max_actor_steps=_MAX_ACTOR_STEPS.value or sizing.DEFAULT_MAX_ACTOR_STEPS[preset],
      min_sigma=_MIN_SIGMA.value, max_sigma=_MAX_SIGMA.value,
      eval_every_seconds=_EVAL_EVERY_SECONDS.value,
      eval_every_learner_steps=_EVAL_EVERY_LEARNER_STEPS.value,
      progress_seconds=_PROGRESS_SECONDS.value,
      checkpoint_minutes=_CHECKPOINT_MINUTES.value,
      learner_keeps_freed_memory={'auto': None, 'yes': True, 'no': False}[
          _LEARNER_KEEPS_FREED_MEMORY.value],
      seed=_SEED.value)


def main(argv):
  try:
    _main(argv)
  except KeyboardInterrupt:  # Before the nodes start (demos, the learner-step timing).
    print('error: stopped by SIGINT before the program started; nothing to save.',
          file=sys.stderr)
    sys.exit(128 + signal.SIGINT)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cpus = os.cpu_count()
  preset = config_flags.preset_name(sizing.default_preset(cpus))
  settings = _settings_from_flags(preset)
  config = config_flags.config_from_flags(preset)
  print(sizing.plan(settings.domain, preset, config_flags.preset_given(), cpus,
                    settings.num_actors, settings.max_actor_steps), flush=True)
  try:
    train_demos = distributed.prepare_workdir(
        settings, config, generate_demos=_DEMO_DIR.value is None,
        num_demos=_NUM_DEMOS.value)
  except (OSError, demonstrations.DemonstrationError, checkpointing.CheckpointError) as e:
    sys.exit(f'error: {e}')
  builder = MetaMimicBuilder(config, make_domain(settings.domain))
  print(sizing.duration_estimate(builder, distributed.environment_spec(builder, train_demos),
                                 train_demos, settings.max_actor_steps), flush=True)
  logging.info('Launching MetaMimic on %s with %d actors of %d environments each; '
               'workdir %s', settings.domain, settings.num_actors,
               settings.envs_per_actor, settings.workdir)
  program, checkpoint = make_program(settings, config, train_demos,
                                     _COLOCATE_ACTORS.value)
  if flags.FLAGS.lp_launch_type != 'local_mp':
    lp.launch(program, terminal='current_terminal')
    return
  resources = {group: local_multi_processing.PythonProcess(env=_node_env(group))
               for group in _GROUPS}
  sys.exit(supervision.Supervisor(program, resources, _STATELESS_GROUPS,
                                  checkpoint).run())


if __name__ == '__main__':
  app.run(main)
