r"""Jaco stacking: the scripted demonstrator's success rate, and environment speed.

  python benchmarks/jaco_demonstrator.py --num_episodes=100 --num_workers=2

Records --num_episodes seeded demonstrations in parallel (as generate_demos.py does) and
reports the success rate, steps to the first task reward, and the imitation reward a
stationary arm earns on each (default feature reward groups); then, on one core, times
the raw environment's control steps with features and with vision against raw
`mujoco.mj_step` on the same model (one control step is 20 physics steps).
"""

import multiprocessing
import os
import time

from absl import flags
import mujoco
import numpy as np

import metamimic_jax  # pylint: disable=unused-import  # Sets the process environment.
from metamimic_jax import cli
from metamimic_jax import demo_sets
from metamimic_jax import demonstrators
from metamimic_jax import keys
from metamimic_jax.environments import base
from metamimic_jax.environments import jaco

_NUM_EPISODES = flags.DEFINE_integer('num_episodes', 100, 'Demonstrator episodes.',
                                     lower_bound=1)
_NUM_WORKERS = flags.DEFINE_integer('num_workers', os.cpu_count(), 'Processes.',
                                    lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the first episode.', lower_bound=0)
_NUM_BRICKS = flags.DEFINE_integer('num_bricks', 2, 'Bricks to stack (2 or 3).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Camera image size for vision.')
_FEATURE_STEPS = flags.DEFINE_integer('feature_steps', 500, 'Timed feature steps.',
                                      lower_bound=1)
_VISION_STEPS = flags.DEFINE_integer('vision_steps', 25, 'Timed vision steps.',
                                     lower_bound=1)


def _episode(args):
  """Records one demo: (stacked, steps to stack, length, CPU s, stationary score)."""
  num_bricks, seed = args
  domain = jaco.JacoStackDomain(num_bricks=num_bricks)
  start = time.process_time()
  demo = demonstrators.record_demonstration(domain, seed)
  cpu = time.process_time() - start
  stacked = demo_sets.is_successful(demo)
  imitation = base.DemoConditionedEnvironment(domain, [demo],
                                              domain.default_reward_groups)
  timesteps = base.run_episode(imitation, lambda ts: np.zeros(9, np.float32))
  stationary = [timestep.reward[keys.IMITATION] for timestep in timesteps[1:]]
  return (bool(stacked), int(demo.task_rewards.argmax()) + 1 if stacked else None,
          demo.length, cpu, float(np.mean(stationary)))


def _control_steps_per_second(environment, num_steps: int) -> float:
  rng = np.random.default_rng(0)
  spec = environment.action_spec()
  actions = rng.uniform(spec.minimum, spec.maximum, (num_steps, *spec.shape))
  environment.reset()
  environment.step(actions[0])  # Warm-up (the renderer's first frame).
  start = time.perf_counter()
  for action in actions:
    environment.step(action)
  return num_steps / (time.perf_counter() - start)


def _raw_control_steps_per_second(environment, num_steps: int) -> float:
  """Plain mj_step on the environment's model, per 20 physics steps (a control step)."""
  substeps = int(round(jaco.CONTROL_TIMESTEP / environment.physics.timestep()))
  model, data = environment.physics.model.ptr, environment.physics.data.ptr
  spec = environment.action_spec()
  data.ctrl[:] = np.random.default_rng(0).uniform(spec.minimum, spec.maximum)
  start = time.perf_counter()
  for _ in range(num_steps * substeps):
    mujoco.mj_step(model, data)
  return num_steps / (time.perf_counter() - start)


def main(argv):
  del argv
  num_bricks = _NUM_BRICKS.value
  domain = jaco.JacoStackDomain(num_bricks=num_bricks)
  jobs = [(num_bricks, _SEED.value + i) for i in range(_NUM_EPISODES.value)]
  start = time.time()
  context = multiprocessing.get_context('spawn')
  with context.Pool(_NUM_WORKERS.value) as pool:
    results = pool.map(_episode, jobs, chunksize=1)
  wall = time.time() - start
  stacked = [r for r in results if r[0]]
  steps = [r[1] for r in stacked]
  print(f'Demonstrator, {num_bricks} bricks, {len(results)} seeded episodes '
        f'(seeds {_SEED.value}..{_SEED.value + len(results) - 1}), '
        f'{_NUM_WORKERS.value} workers:')
  print(f'  success rate {len(stacked) / len(results):.1%} ({len(stacked)}/{len(results)})')
  if steps:
    print(f'  steps to stack: mean {np.mean(steps):.1f}, median {np.median(steps):.0f}, '
          f'min {min(steps)}, max {max(steps)} (control steps at 25 Hz)')
  print(f'  demo length: mean {np.mean([r[2] for r in results]):.1f} frames '
        f'(cap {domain.demo_length}); CPU per episode '
        f'{np.mean([r[3] for r in results]):.1f} s; wall {wall:.0f} s')
  print(f'  imitation reward of a stationary arm (zero actions), mean per step: '
        f'{np.mean([r[4] for r in results]):.3f} (the demonstrator itself: 1)')

  features = domain.make_environment(seed=0, time_limit=float('inf'))
  feature_rate = _control_steps_per_second(features, _FEATURE_STEPS.value)
  raw_rate = _raw_control_steps_per_second(features, _FEATURE_STEPS.value)
  vision_domain = jaco.JacoStackDomain(num_bricks=num_bricks, vision=True,
                                       image_size=_IMAGE_SIZE.value)
  vision = vision_domain.make_environment(seed=0, time_limit=float('inf'))
  vision_rate = _control_steps_per_second(vision, _VISION_STEPS.value)
  print('Environment speed, one core (control steps/s; one is 20 physics steps):')
  size = _IMAGE_SIZE.value
  for label, rate in (('raw mujoco.mj_step', raw_rate), ('features', feature_rate),
                      (f'vision {size}x{size}', vision_rate)):
    print(f'  {label:<20} {rate:8.1f}  ({rate / raw_rate:.3f}x raw)')


if __name__ == '__main__':
  cli.run(main)
