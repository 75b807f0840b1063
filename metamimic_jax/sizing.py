"""Fitting the distributed program to the machine it starts on.

The learner is the program's bottleneck: the replay rate limiter lets actors insert only
batch_size / samples_per_insert transitions per learner step. On a small CPU machine every
other node takes cycles the learner needs, so the defaults there are the cpu_small preset
and few actors; the paper-scale settings stay one flag away (--preset=paper).
"""

import time
from typing import Optional, Sequence, Tuple

from acme import specs
import jax
import numpy as np
import reverb

from metamimic_jax import demonstrations as demos_lib
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig

# The environment variable the launcher sets, per group, to the group's name.
NODE_ENV = 'METAMIMIC_NODE'
# Machines with at most this many cores run the cpu_small preset unless told otherwise.
SMALL_MACHINE_CPUS = 8
# Each actor is a process running the environment, the policy and the adder; more of
# them than this per core only time-slice each other (and the learner).
MAX_ACTORS_PER_CPU = 2
# Actor steps a run takes by default: the cpu_small run ends in about 20-30 minutes on
# a 2-core machine (see WORKSPACE_NOTES.md); the paper-scale run is the D4PG-sized one.
DEFAULT_MAX_ACTOR_STEPS = {'cpu_small': 150_000, 'paper': 1_000_000}
# The learner's steps/s inside the program as a fraction of its steps/s alone, as
# benchmarks/program_throughput.py measured it on a 2-core machine: for the estimate.
PROGRAM_LEARNER_FRACTION = 0.5
# Torsos whose learner keeps the memory it frees, as learners of images do.
FREED_MEMORY_TORSOS = ('large',)


def default_preset(cpu_count: int) -> str:
  return 'cpu_small' if cpu_count <= SMALL_MACHINE_CPUS else 'paper'


def default_num_actors(cpu_count: int) -> int:
  """One core for the learner, one actor for each core beside it."""
  return max(1, cpu_count - 1)


def max_num_actors(cpu_count: int) -> int:
  return MAX_ACTORS_PER_CPU * cpu_count


def check_num_actors(num_actors: int, cpu_count: int) -> None:
  """Raises ValueError, in one line, when the machine cannot feed `num_actors`."""
  limit = max_num_actors(cpu_count)
  if num_actors > limit:
    raise ValueError(
        f'--num_actors={num_actors} is more than this {cpu_count}-core machine can feed '
        f'(at most {limit}: {MAX_ACTORS_PER_CPU} per core; default '
        f'{default_num_actors(cpu_count)})')


def learner_keeps_freed_memory(config: MetaMimicConfig,
                               spec: specs.EnvironmentSpec) -> bool:
  """Whether a learner process should call `process_env.keep_freed_memory`: where its
  step's arrays are large (images, FREED_MEMORY_TORSOS), malloc's fresh pages cost it
  8-16% (the pixel program) to half its speed (large features, in some runs); elsewhere
  the one shared arena costs about as much (WORKSPACE_NOTES.md, "Page faults")."""
  reads_images = any(np.dtype(leaf.dtype) == np.uint8
                     for leaf in jax.tree.leaves(spec.observations))
  return reads_images or bool(
      {config.policy_torso, config.critic_torso} & set(FREED_MEMORY_TORSOS))


def process_cpu_seconds() -> float:
  """CPU time of this process, all threads (XLA and tf.data use several)."""
  return time.process_time()


def time_learner_steps(builder: MetaMimicBuilder, spec: specs.EnvironmentSpec,
                       demos: Sequence[demos_lib.Demonstration], num_steps: int,
                       warmup_steps: int = 3, seed: int = 0,
                       min_replay_size: Optional[int] = None) -> Tuple[float, float]:
  """(wall, CPU) seconds per learner step run alone, as the learner node runs it.

  The learner samples through the same Reverb dataset from an in-process table that
  random-action episodes on `demos` filled; the CPU includes the table's server.
  """
  config = builder.config
  table, = builder.make_replay_tables(spec, enforce_samples_per_insert=False)
  server = reverb.Server([table])
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = builder.make_adder(client, spec)
    environment = builder.make_demo_environment(demos, seed)
    rng = np.random.default_rng(seed)
    actions = spec.actions
    inserted = 0
    while inserted < (min_replay_size or config.batch_size):
      timestep = environment.reset()
      adder.add_first(timestep)
      while not timestep.last():
        action = rng.uniform(actions.minimum, actions.maximum,
                             actions.shape).astype(actions.dtype)
        timestep = environment.step(action)
        adder.add(action, timestep)
        inserted += 1
    learner = builder.make_learner(
        jax.random.PRNGKey(seed), builder.make_networks(spec),
        builder.make_dataset_iterator(f'localhost:{server.port}', spec), spec)
    for _ in range(warmup_steps):  # Compiles.
      learner.step()
    jax.block_until_ready(learner.save())
    wall, cpu = time.perf_counter(), process_cpu_seconds()
    for _ in range(num_steps):
      learner.step()
    jax.block_until_ready(learner.save())
    return ((time.perf_counter() - wall) / num_steps,
            (process_cpu_seconds() - cpu) / num_steps)
  finally:
    server.stop()


def plan(domain: str, preset: str, preset_given: bool, cpu_count: int, num_actors: int,
         max_actor_steps: int) -> str:
  """What the program will run, in one line."""
  why = ('' if preset_given else
         f' (default for {cpu_count} cores: ' + (
             f'<= {SMALL_MACHINE_CPUS}; --preset=paper for the paper-scale settings)'
             if preset == 'cpu_small' else f'> {SMALL_MACHINE_CPUS})'))
  return (f'MetaMimic on {domain}: preset {preset}{why}, {num_actors} '
          f'actor{"s" * (num_actors > 1)}, until {max_actor_steps} actor steps.')


def duration_estimate(builder: MetaMimicBuilder, spec: specs.EnvironmentSpec,
                      demos: Sequence[demos_lib.Demonstration],
                      max_actor_steps: int, num_steps: int = 10) -> str:
  """A rough duration, from a few learner steps timed alone now."""
  config = builder.config
  step_seconds, _ = time_learner_steps(builder, spec, demos, num_steps)
  actor_steps_per_second = (PROGRAM_LEARNER_FRACTION / step_seconds
                            * config.batch_size / config.samples_per_insert)
  minutes = max_actor_steps / actor_steps_per_second / 60
  return (f'Roughly {minutes:.0f} min, a rough estimate: a learner step alone takes '
          f'{1000 * step_seconds:.0f} ms here, in the program it gets about '
          f'{PROGRAM_LEARNER_FRACTION:g} of the CPU it would have alone, and each step '
          f'lets the actors add {config.batch_size / config.samples_per_insert:g} '
          'transitions.')

