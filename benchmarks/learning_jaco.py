r"""Learning benchmark on the paper's domain: one-shot imitation of Jaco stacking.

  .venv/bin/python benchmarks/learning_jaco.py --minutes=120 --preset=cpu_small

Trains single-process (experiments/train.py's loop) from features and prints held-out
one-shot imitation against env steps and wall time: the mean per-step imitation reward
(1.0 is a perfect copy) and the tracking errors in physical units (pinch site and free
bricks in cm, arm joints in rad), beside baselines measured in the same run: the
stationary arm (zero joint velocities), the untrained policy (the first evaluation) and
the demonstrator (re-run from each held-out demo's seed). Writes a PNG learning curve.
Target on a 2-core machine within 2 hours: reward >= 0.6 and pinch error <= 3 cm.
"""

import dataclasses
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
from metamimic_jax import plotting
from metamimic_jax import training
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.environments import make_domain

from absl import app
from absl import flags
import numpy as np

_MINUTES = flags.DEFINE_float('minutes', 120.0, 'Wall-time budget for training.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/metamimic_bench_jaco', 'Workdir.')
_DEMO_DIR = flags.DEFINE_string('demo_dir', None, 'train.h5 and held_out.h5 (default: '
                                'generated into the workdir).')
_NUM_DEMOS = flags.DEFINE_integer('num_demos', 200, 'Demos to generate if none given.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every_env_steps', 25_000,
                                   'Env steps between held-out evaluations.')
_TARGET_REWARD = flags.DEFINE_float('target_reward', 0.6, 'Imitation reward to reach.')
_TARGET_PINCH_CM = flags.DEFINE_float('target_pinch_cm', 3.0, 'Pinch error to reach.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False,
                                 "Report the workdir's logged curve (a run cut short) "
                                 'beside fresh baselines, without training.')

_ERRORS = ('pinch_error_cm', 'brick_error_cm', 'arm_joint_error_rad')


def main(argv):
  del argv
  config = config_flags.config_from_flags()
  settings = training.TrainSettings(
      domain='jaco_stack', workdir=_WORKDIR.value, demo_dir=_DEMO_DIR.value,
      num_demos=_NUM_DEMOS.value, max_env_steps=10**9, max_wall_minutes=_MINUTES.value,
      eval_every_env_steps=_EVAL_EVERY.value, num_task_eval_episodes=5)
  if _REPORT_ONLY.value and not os.path.exists(training.evaluator_log(settings.workdir)):
    raise app.UsageError(f'--report_only: no evaluator log in {settings.workdir}')
  domain = make_domain('jaco_stack')
  _, held_out = demo_sets.prepare(
      domain, settings.demo_dir or os.path.join(settings.workdir, 'demos'),
      generate_if_absent=settings.demo_dir is None, num_demos=settings.num_demos)
  # Baselines act every frame (the demonstrator does); rewards are per-frame means.
  environment = MetaMimicBuilder(dataclasses.replace(config, action_repeat=1),
                                 domain).make_demo_environment(held_out, seed=0)
  stationary = baselines.zero_action_imitation(environment)
  demonstrator = baselines.demonstrator_imitation(domain, environment)
  raw_steps_per_second = baselines.raw_env_steps_per_second(domain)

  if _REPORT_ONLY.value:
    curve = training.evaluation_curve(settings.workdir)
    seconds = 60 * curve['wall_minutes'][-1]
  else:
    start = time.time()
    training.run(settings, config)
    seconds = time.time() - start
    curve = training.evaluation_curve(settings.workdir)
  print(f'\nHeld-out one-shot imitation of Jaco stacking, {len(held_out)} demos '
        '(reward: mean per step, 1.0 = perfect copy)')
  print(f'{"env steps":>10} {"minutes":>8} {"reward":>7} {"pinch cm":>9} '
        f'{"brick cm":>9} {"joint rad":>9} {"stacked":>8}')
  rows = zip(curve['actor_steps'], curve['wall_minutes'], curve['imitation_reward'],
             *(curve[k] for k in _ERRORS), curve['imitation_final_task_success'])
  for steps, minutes, reward, pinch, brick, joint, stacked in rows:
    print(f'{int(steps):>10} {minutes:>8.1f} {reward:>7.3f} {pinch:>9.2f} {brick:>9.2f} '
          f'{joint:>9.3f} {stacked:>8.2f}')
  print(f'\nbaselines: stationary arm {stationary["imitation_reward"]:.3f} '
        f'(pinch {stationary["pinch_error_cm"]:.2f} cm, brick '
        f'{stationary["brick_error_cm"]:.2f} cm, joints '
        f'{stationary["arm_joint_error_rad"]:.3f} rad), untrained policy '
        f'{curve["imitation_reward"][0]:.3f} (pinch {curve["pinch_error_cm"][0]:.2f} cm), '
        f'demonstrator {demonstrator["imitation_reward"]:.3f}')
  best = int(np.argmax(curve['imitation_reward']))
  print(f'best reward {curve["imitation_reward"][best]:.3f} (pinch '
        f'{curve["pinch_error_cm"][best]:.2f} cm) at {int(curve["actor_steps"][best])} '
        f'env steps; final {curve["imitation_reward"][-1]:.3f} (pinch '
        f'{curve["pinch_error_cm"][-1]:.2f} cm) after {seconds / 60:.1f} min')
  reached = np.flatnonzero((curve['imitation_reward'] >= _TARGET_REWARD.value) &
                           (curve['pinch_error_cm'] <= _TARGET_PINCH_CM.value))
  print(f'target reward >= {_TARGET_REWARD.value} and pinch <= '
        f'{_TARGET_PINCH_CM.value} cm: ' + (
            f'reached at {int(curve["actor_steps"][reached[0]])} env steps, '
            f'{curve["wall_minutes"][reached[0]]:.1f} min' if reached.size else
            'not reached'))
  # An episode's last decision may hold fewer frames: frames/s is an upper bound.
  decisions_per_second = curve['actor_steps'][-1] / seconds
  frames_per_second = decisions_per_second * config.action_repeat
  print(f'machine bound: raw env {raw_steps_per_second:.0f} frames/s; training ran '
        f'{decisions_per_second:.0f} env steps/s of {config.action_repeat} frames, about '
        f'{frames_per_second:.0f} frames/s ({frames_per_second / raw_steps_per_second:.3f} '
        'of raw)')
  png = os.path.join(settings.workdir, 'learning_curve_jaco.png')
  plotting.plot_imitation_benchmark(
      curve, png, baselines={'stationary arm': stationary, 'demonstrator': demonstrator},
      error_keys=_ERRORS)
  print(f'plot: {png}')


if __name__ == '__main__':
  cli.run(main)
