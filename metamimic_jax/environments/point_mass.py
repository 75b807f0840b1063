"""The fast domain: dm_control suite point_mass, 25 Hz control, sparse reach reward.

The body features are the point's position and velocity. The task reward is 1 while the
point is within `TARGET_RADIUS` of the target at the arena's centre, 0 otherwise.
"""

from typing import Dict, Mapping, Optional

import dm_env
from dm_control import suite
import numpy as np

from metamimic_jax import keys
from metamimic_jax.config import FeatureGroup
from metamimic_jax.environments import base

CONTROL_SUBSTEPS = 2  # 2 x 0.02 s physics steps: 25 Hz control.
TARGET_RADIUS = 0.02


class _SparseReachReward(base.Float32Environment):
  """float32 observations and the sparse reach reward in place of the shaped one."""

  def _cast(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
    timestep = super()._cast(timestep)
    if timestep.first():
      return timestep
    distance = self._environment.physics.mass_to_target_dist()
    return timestep._replace(reward=np.float32(distance < TARGET_RADIUS))

  def reward_spec(self):
    return dm_env.specs.Array((), np.float32, keys.TASK)


class PointMassDomain(base.Domain):
  """Planar point mass; a demonstration is a random smooth path."""

  name = 'point_mass'
  demo_length = 100  # 4 s.
  default_reward_groups = (FeatureGroup(('position', 'velocity'), 1.0, 2000.0),)
  trajectory_key = 'position'

  def make_environment(self, seed: int,
                       time_limit: Optional[float] = None) -> dm_env.Environment:
    environment = suite.load(
        'point_mass', 'easy',
        task_kwargs={'random': seed,
                     'time_limit': self.demo_length * 0.04 if time_limit is None
                                   else time_limit},
        environment_kwargs={'n_sub_steps': CONTROL_SUBSTEPS})
    return _SparseReachReward(environment)

  def capture_state(self, environment: dm_env.Environment) -> Dict[str, np.ndarray]:
    return {'physics': np.asarray(environment.physics.get_state(), np.float64)}

  def restore_state(self, environment: dm_env.Environment,
                    state: Mapping[str, np.ndarray]) -> dm_env.TimeStep:
    environment.reset()
    physics = environment.physics
    with physics.reset_context():
      physics.set_state(np.asarray(state['physics']))
    observation = environment.task.get_observation(physics)
    return dm_env.restart({k: np.asarray(v, np.float32) for k, v in observation.items()})

  def tracking_errors(self, observation: Mapping[str, np.ndarray],
                      demo_frame: Mapping[str, np.ndarray]) -> Dict[str, float]:
    error = np.linalg.norm(observation['position'] - demo_frame['position'])
    return {'position_error_cm': 100 * float(error)}
