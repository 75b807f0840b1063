"""The fast domain: dm_control suite point_mass, 25 Hz control, sparse reach reward.

The body features are the point's position and velocity. The task reward is 1 while the
point is within `TARGET_RADIUS` of the target at the arena's centre, 0 otherwise.

With vision (`point_mass_pixels`) observations also hold `pixels` [S, S, 3] uint8, the
arena seen from above by the model's fixed camera, and the demonstration reaches the
agent as pixels only (`default_goal_keys`): the agent keeps its own position and
velocity (a body's proprioception, which the paper's vision setting keeps), and must read
from the demonstration's frames where to go.
"""

from typing import Dict, Mapping, Optional

import dm_env
from dm_env import specs
from dm_control import suite
import numpy as np

from metamimic_jax import keys
from metamimic_jax.config import FeatureGroup
from metamimic_jax.environments import base

CONTROL_SUBSTEPS = 2  # 2 x 0.02 s physics steps: 25 Hz control.
TARGET_RADIUS = 0.02
PIXELS = 'pixels'
IMAGE_SIZE = 32  # The arena's 0.6 m across 32 px: about 2 cm a pixel.
CAMERA = 'fixed'  # Top-down, the whole arena in view.
# The mass is drawn with this radius (m), not the model's 1 cm (under a pixel at 32 px),
# so that a shift of a fraction of a pixel changes the (anti-aliased) image. Rendering
# only: contacts are off and the mass is given explicitly, so the dynamics are the same.
RENDER_RADIUS = 0.025
BODY_SCALE = 2000.0  # 1 cm of position error alone: 0.82.
# With vision the body group weighs 2/3 and the pixel group 1/3 (as Jaco's vision);
# the pixel group's scale is per pixel in [0, 1], divided by the image area. The drawn
# mass at 1 cm off scores 0.6, at 2 cm 0.3, and apart from its demo frame's about 0.1.
PIXEL_SCALE = 300.0


class _PointMassEnvironment(base.Float32Environment):
  """float32 observations, the sparse reach reward in place of the shaped one, and,
  with `image_size`, the camera's pixels."""

  def __init__(self, environment: dm_env.Environment, image_size: Optional[int]):
    super().__init__(environment)
    self._image_size = image_size
    if image_size:
      model = environment.physics.named.model
      model.geom_size['pointmass', 0] = RENDER_RADIUS

  def observation(self) -> Dict[str, np.ndarray]:
    """The observation of the current physics state."""
    physics = self._environment.physics
    observation = {k: np.asarray(v, np.float32)
                   for k, v in self._environment.task.get_observation(physics).items()}
    if self._image_size:
      observation[PIXELS] = self._render()
    return observation

  def _render(self) -> np.ndarray:
    return self._environment.physics.render(self._image_size, self._image_size,
                                            camera_id=CAMERA)

  def _cast(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
    timestep = super()._cast(timestep)
    if self._image_size:
      timestep = timestep._replace(
          observation={**timestep.observation, PIXELS: self._render()})
    if timestep.first():
      return timestep
    distance = self._environment.physics.mass_to_target_dist()
    return timestep._replace(reward=np.float32(distance < TARGET_RADIUS))

  def observation_spec(self):
    spec = super().observation_spec()
    if self._image_size:
      spec[PIXELS] = specs.Array((self._image_size, self._image_size, 3), np.uint8,
                                 PIXELS)
    return spec

  def reward_spec(self):
    return dm_env.specs.Array((), np.float32, keys.TASK)


class PointMassDomain(base.Domain):
  """Planar point mass; a demonstration is a random smooth path."""

  demo_length = 100  # 4 s.
  trajectory_key = 'position'

  @property
  def name(self) -> str:
    return 'point_mass_pixels' if self.vision else 'point_mass'

  def __init__(self, vision: bool = False, image_size: int = IMAGE_SIZE):
    """Configures the domain.

    Args:
      vision: whether observations include the camera's pixels ('point_mass_pixels').
      image_size: the camera image's height and width.
    """
    if image_size < 16:
      raise ValueError(f'image_size must be at least 16, got {image_size}')
    self.vision = vision
    self.image_size = image_size
    body = FeatureGroup(('position', 'velocity'), 1.0, BODY_SCALE)
    self.default_reward_groups = (body,)
    if vision:  # The demonstration is shown as pixels; the reward also compares them.
      self.default_goal_keys = (PIXELS,)
      self.default_reward_groups = (
          FeatureGroup(body.keys, 2 / 3, body.scale),
          FeatureGroup((PIXELS,), 1 / 3, PIXEL_SCALE / image_size**2))

  def make_environment(self, seed: int,
                       time_limit: Optional[float] = None) -> dm_env.Environment:
    environment = suite.load(
        'point_mass', 'easy',
        task_kwargs={'random': seed,
                     'time_limit': self.demo_length * 0.04 if time_limit is None
                                   else time_limit},
        environment_kwargs={'n_sub_steps': CONTROL_SUBSTEPS})
    return _PointMassEnvironment(environment,
                                 self.image_size if self.vision else None)

  def capture_state(self, environment: dm_env.Environment) -> Dict[str, np.ndarray]:
    return {'physics': np.asarray(environment.physics.get_state(), np.float64)}

  def restore_state(self, environment: dm_env.Environment,
                    state: Mapping[str, np.ndarray]) -> dm_env.TimeStep:
    environment.reset()
    with environment.physics.reset_context():
      environment.physics.set_state(np.asarray(state['physics']))
    return dm_env.restart(environment.observation())

  def tracking_errors(self, observation: Mapping[str, np.ndarray],
                      demo_frame: Mapping[str, np.ndarray]) -> Dict[str, float]:
    error = np.linalg.norm(observation['position'] - demo_frame['position'])
    return {'position_error_cm': 100 * float(error)}
