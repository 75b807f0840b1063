"""Learning benchmark on the fast domain: held-out one-shot imitation reward over time.

  .venv/bin/python benchmarks/learning_point_mass.py --minutes=30
  .venv/bin/python benchmarks/learning_point_mass.py --domain=point_mass_pixels ...

`--domain=point_mass_pixels` imitates from pixels (demonstrations shown as camera frames);
add `--privileged_critic` (a features critic; the policy still sees pixels) to learn it
on a CPU budget (README: the full command).

Trains single-process (experiments/train.py's loop) with the default agent config and
prints held-out mean per-step imitation reward against env steps and wall time, beside
baselines measured in the same run: the zero-action policy, the untrained policy and the
demonstrator (re-run from each held-out demo's seed; 1.0 by construction). Also prints
the task policy's steps to reach the target beside the demonstrators', and the raw env
steps/s of this machine as a bound. Target: >= 0.8 within 30 minutes on 2 cores.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import baselines
from metamimic_jax import cli
from metamimic_jax import demo_sets
from metamimic_jax import flags as config_flags
from metamimic_jax import training
from metamimic_jax.environments import base
from metamimic_jax.environments import make_domain

from absl import flags
import numpy as np

_MINUTES = flags.DEFINE_float('minutes', 30.0, 'Wall-time budget for training.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/metamimic_bench_point_mass', 'Workdir.')
_TARGET = flags.DEFINE_float('target', 0.8, 'Held-out imitation reward to reach.')
_DOMAIN = flags.DEFINE_enum('domain', 'point_mass', ['point_mass', 'point_mass_pixels'],
                            'The fast domain, from features or from pixels.')
_NUM_DEMOS = flags.DEFINE_integer('num_demos', training.TrainSettings.num_demos,
                                  'Demos to record; the successful ones are kept.',
                                  lower_bound=2)
_HELD_OUT_FRACTION = flags.DEFINE_float(
    'held_out_fraction', training.TrainSettings.held_out_fraction,
    'Fraction of the kept demos held out for evaluation.', lower_bound=0, upper_bound=1)
_NUM_ENVS = flags.DEFINE_integer('num_envs', training.TrainSettings.num_envs,
                                 'Training environments acting together.', lower_bound=1)
_EVAL_EVERY = flags.DEFINE_integer('eval_every_env_steps', 10_000,
                                   'Actor steps between evaluations.', lower_bound=1)


def _baselines(domain, held_out):
  """Zero-action and demonstrator per-step imitation reward; raw env steps/s."""
  environment = base.DemoConditionedEnvironment(domain, held_out,
                                                domain.default_reward_groups,
                                                domain.default_goal_keys)
  zero = baselines.zero_action_imitation(environment)
  demonstrator = baselines.demonstrator_imitation(domain, environment)
  return (zero['imitation_reward'], demonstrator['imitation_reward'],
          demonstrator['task_steps_to_success'],
          baselines.raw_env_steps_per_second(domain, seconds=2.0))


def main(argv):
  del argv
  config = config_flags.config_from_flags()
  settings = training.TrainSettings(
      domain=_DOMAIN.value, workdir=_WORKDIR.value, num_demos=_NUM_DEMOS.value,
      held_out_fraction=_HELD_OUT_FRACTION.value, max_env_steps=10**9,
      max_wall_minutes=_MINUTES.value, eval_every_env_steps=_EVAL_EVERY.value,
      num_envs=_NUM_ENVS.value)
  domain = make_domain(settings.domain)
  _, held_out = demo_sets.prepare(
      domain, os.path.join(settings.workdir, 'demos'), generate_if_absent=True,
      num_demos=settings.num_demos, held_out_fraction=settings.held_out_fraction)
  zero, demonstrator, demonstrator_steps, raw_steps_per_second = _baselines(
      domain, held_out)
  start = time.time()
  training.run(settings, config)
  seconds = time.time() - start

  curve = training.evaluation_curve(settings.workdir)
  steps, minutes = curve['actor_steps'], curve['wall_minutes']
  reward = curve['imitation_reward']
  print('\nHeld-out one-shot imitation (mean per-step reward, 1.0 = perfect copy)')
  print(f'{"env steps":>10} {"minutes":>8} {"reward":>7}')
  for s, m, r in zip(steps, minutes, reward):
    print(f'{int(s):>10} {m:>8.1f} {r:>7.3f}')
  reached = np.flatnonzero(reward >= _TARGET.value)
  print(f'\nbaselines: zero action {zero:.3f}, untrained policy {reward[0]:.3f}, '
        f'demonstrator {demonstrator:.3f}')
  print(f'best {reward.max():.3f}, final {reward[-1]:.3f} after {int(steps[-1])} env '
        f'steps in {seconds / 60:.1f} min')
  print(f'target {_TARGET.value}: ' + (
      f'reached at {int(steps[reached[0]])} env steps, {minutes[reached[0]]:.1f} min'
      if reached.size else 'not reached'))
  task_steps = curve.get('task_steps_to_success')
  if task_steps is not None:
    print(f'task policy: success {curve["task_success"][-1]:.2f}, '
          f'steps to target {task_steps[-1]:.1f} vs demonstrators\' '
          f'{demonstrator_steps:.1f}')
  total_steps = steps[-1]
  print(f'machine bound: raw env {raw_steps_per_second:.0f} steps/s; training ran '
        f'{total_steps / seconds:.0f} env steps/s '
        f'({total_steps / seconds / raw_steps_per_second:.3f} of raw)')


if __name__ == '__main__':
  cli.run(main)
