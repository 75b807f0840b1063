r"""Renders one Jaco stacking demonstration as a strip of frames.

  python experiments/render_demo_strip.py --seed=0 --output=docs/jaco_demo_strip.png

Runs the seeded demonstration (features only, fast), then replays the same actions from
the same initial state to render --num_frames frames spread from the first frame to the
moment the stack stands, plus the last frame, from a camera looking at the base brick
from the front right (the task's front camera shows the bricks too small to read).
"""

import os

from absl import flags
import metamimic_jax  # pylint: disable=unused-import,g-bad-import-order  # Before MuJoCo: EGL.
from dm_control.mujoco import engine
import imageio
import numpy as np

from metamimic_jax import cli
from metamimic_jax import demonstrators
from metamimic_jax.environments import base
from metamimic_jax.environments import jaco

_SEED = flags.DEFINE_integer('seed', 0, 'Demonstration seed.', lower_bound=0)
_NUM_FRAMES = flags.DEFINE_integer('num_frames', 8, 'Frames in the strip.', lower_bound=2)
_FRAME_SIZE = flags.DEFINE_integer('frame_size', 160, 'Frame height and width.',
                                   lower_bound=16)
_OUTPUT = flags.DEFINE_string('output', 'docs/jaco_demo_strip.png', 'PNG to write.')


def main(argv):
  del argv
  domain = jaco.JacoStackDomain()
  environment = domain.make_environment(_SEED.value)
  demonstrator = demonstrators.make_demonstrator(domain, _SEED.value, environment)
  actions = []

  def act(timestep):
    actions.append(demonstrator(timestep))
    return actions[-1]

  timesteps = base.run_episode(environment, act, max_steps=domain.demo_length - 1,
                               stop=lambda: demonstrator.done)
  rewards = np.asarray([timestep.reward for timestep in timesteps[1:]])
  stacked = int(np.argmax(rewards > 0)) + 1 if rewards.any() else len(actions)
  picks = set(np.linspace(0, stacked, _NUM_FRAMES.value - 1).round().astype(int))
  picks.add(len(actions))

  # Replay the same actions from the same initial state, rendering the picked frames.
  replay = domain.make_environment(_SEED.value)
  timestep = replay.reset()
  size = _FRAME_SIZE.value
  camera = engine.MovableCamera(replay.physics, size, size)
  camera.set_pose(timestep.observation['brick0_pos'] + [0.0, 0.0, 0.08],
                  distance=0.5, azimuth=120.0, elevation=-25.0)
  frames = []
  for t in range(len(actions) + 1):
    if t in picks:
      frames.append(camera.render().copy())  # render() reuses its buffer.
    if t < len(actions):
      replay.step(actions[t])
  strip = np.concatenate(frames, axis=1)
  os.makedirs(os.path.dirname(_OUTPUT.value) or '.', exist_ok=True)
  imageio.imwrite(_OUTPUT.value, strip)
  print(f'Seed {_SEED.value}: {len(actions) + 1} frames, stacked at step '
        f'{stacked if rewards.any() else "never"}; wrote frames {sorted(picks)} to '
        f'{_OUTPUT.value}.')


if __name__ == '__main__':
  cli.run(main)
