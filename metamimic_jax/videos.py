"""Videos of imitations: the demonstration and the imitation side by side, rendered from
the simulator, with the per-step imitation reward drawn under them.

Demonstrations store observations only, so the demonstration pane re-runs the domain's
demonstrator from the demo's seed and initial state (the replays are exact: the
demonstrators score 1.0 against their own demos). MP4s are written with PyAV.
"""

from typing import Callable, List, Sequence

import imageio.v3 as iio
import numpy as np
from PIL import Image
from PIL import ImageDraw

from metamimic_jax import demonstrators
from metamimic_jax.environments import base

# Each domain's first camera: point_mass's top-down view, Jaco's front_close.
CAMERA = 0
FRAMES_PER_SECOND = 25  # Both domains act at 25 Hz: videos play in real time.
_BACKGROUND = (24, 24, 24)
_DONE = (90, 170, 255)  # The reward curve up to the current step.
_AHEAD = (80, 80, 80)  # ... and after it.
_TEXT = (235, 235, 235)


def render(environment: base.DemoConditionedEnvironment, size: int) -> np.ndarray:
  """The demo-conditioned environment's simulator seen from `CAMERA`, [size, size, 3]."""
  return environment.environment.physics.render(size, size, camera_id=CAMERA).copy()


def rendered_episode(environment: base.DemoConditionedEnvironment, index: int,
                     policy: base.Policy, size: int,
                     on_frame: Callable[[], None] = lambda: None
                     ) -> List[np.ndarray]:
  """One frame per demo frame (T of them) of `policy` imitating demonstration `index`."""
  frames = []

  def rendering_policy(timestep):
    frames.append(render(environment, size))
    on_frame()
    return policy(timestep)

  environment.select_demonstration(index)
  base.run_episode(environment, rendering_policy)
  frames.append(render(environment, size))
  on_frame()
  return frames


def demonstrator_policy(environment: base.DemoConditionedEnvironment,
                        index: int) -> base.Policy:
  """The demonstrator that recorded demonstration `index`, acting in `environment`."""
  demo = environment.demonstrations[index]
  if demo.seed < 0:
    raise ValueError(f'demonstration {index} has no seed: its demonstrator cannot be '
                     're-run to render it')
  demonstrator = demonstrators.make_demonstrator(environment.domain, demo.seed,
                                                 environment.environment)
  return lambda timestep: demonstrator(base.raw_timestep(timestep))


def reward_strip(rewards: Sequence[float], step: int, width: int,
                 height: int) -> np.ndarray:
  """The per-step rewards (in [0, 1]) as columns, coloured up to `step` (0: none yet),
  with the current step's reward written in the corner; [height, width, 3] uint8."""
  image = np.empty((height, width, 3), np.uint8)
  image[:] = _BACKGROUND
  rewards = np.clip(np.asarray(rewards, np.float32), 0, 1)
  # Step t (1-based) covers columns [x_t-1, x_t).
  edges = np.linspace(0, width, len(rewards) + 1).round().astype(int)
  for t, (reward, start, end) in enumerate(zip(rewards, edges, edges[1:]), start=1):
    bar = int(round(reward * (height - 1)))
    if bar:
      image[height - bar:, start:max(end, start + 1)] = _DONE if t <= step else _AHEAD
  label = f'reward {rewards[step - 1]:.2f}' if step else 'reward'
  canvas = Image.fromarray(image)
  ImageDraw.Draw(canvas).text((2, 1), label, fill=_TEXT)
  return np.asarray(canvas)


def compose(demo_frames: Sequence[np.ndarray], imitation_frames: Sequence[np.ndarray],
            rewards: Sequence[float]) -> np.ndarray:
  """Video frames [T, H + H/2, 2W, 3]: demonstration left, imitation right, the reward of
  each step so far under them. `rewards` holds steps 1 .. T-1."""
  if not len(demo_frames) == len(imitation_frames) == len(rewards) + 1:
    raise ValueError(f'{len(demo_frames)} demonstration frames, {len(imitation_frames)} '
                     f'imitation frames and {len(rewards)} rewards do not match')
  height, width = imitation_frames[0].shape[:2]
  strip_height = 2 * (height // 4)  # Even: H.264 needs even frame sizes.
  return np.stack([
      np.concatenate([np.concatenate([demo, imitation], axis=1),
                      reward_strip(rewards, step, 2 * width, strip_height)], axis=0)
      for step, (demo, imitation) in enumerate(zip(demo_frames, imitation_frames))])


def write_mp4(path: str, frames: np.ndarray) -> None:
  """Writes [T, H, W, 3] uint8 frames (H and W even) as H.264 at `FRAMES_PER_SECOND`."""
  iio.imwrite(path, frames, plugin='pyav', codec='libx264', fps=FRAMES_PER_SECOND)


def read_mp4(path: str) -> np.ndarray:
  """The decoded frames of an MP4, [T, H, W, 3] uint8."""
  return iio.imread(path, plugin='pyav')


def frame_strip(demo_frames: Sequence[np.ndarray], imitation_frames: Sequence[np.ndarray],
                num_frames: int) -> np.ndarray:
  """`num_frames` frames spread evenly over the episode: the demonstration's on the top
  row, the imitation's under them."""
  steps = np.linspace(0, len(demo_frames) - 1, num_frames).round().astype(int)
  return np.concatenate([np.concatenate([demo_frames[t] for t in steps], axis=1),
                         np.concatenate([imitation_frames[t] for t in steps], axis=1)],
                        axis=0)
