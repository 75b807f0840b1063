"""Specs and batches for the core's tests, made without Acme or any environment.

The specs have the shapes of the point-mass domain's demo-conditioned environment
(goal horizon 1) and, for pixels, of a small camera.
"""

import jax
import numpy as np

from metamimic_jax import learning
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.specs import BoundedArray, EnvironmentSpec

TINY_CONFIG = MetaMimicConfig(
    batch_size=8, min_replay_size=10, policy_layer_sizes=(16, 16),
    critic_layer_sizes=(16, 16), num_atoms=11, n_step=3, target_update_period=2)


def _array(shape, dtype=np.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def point_mass_spec() -> EnvironmentSpec:
  features = lambda *lead: {'position': _array(lead + (2,)),
                            'velocity': _array(lead + (2,))}
  return EnvironmentSpec(
      observations={'observation': features(), 'goal': features(1)},
      actions=BoundedArray((2,), np.float32, -np.ones(2, np.float32),
                          np.ones(2, np.float32)))


def pixel_spec(size: int = 16, horizon: int = 2) -> EnvironmentSpec:
  """Joint features and RGB pixels, in the observation and in `horizon` goal frames."""
  part = lambda *lead: {'pixels': _array(lead + (size, size, 3), np.uint8),
                        'joints': _array(lead + (4,))}
  return EnvironmentSpec(
      observations={'observation': part(), 'goal': part(horizon)},
      actions=BoundedArray((3,), np.float32, np.full(3, -2.0, np.float32),
                          np.full(3, 2.0, np.float32)))


def random_observation(spec: EnvironmentSpec, batch_size: int, rng: np.random.Generator):
  def sample(s):
    if s.dtype == np.uint8:
      return rng.integers(0, 256, (batch_size,) + s.shape).astype(np.uint8)
    return rng.uniform(-0.3, 0.3, (batch_size,) + s.shape).astype(s.dtype)
  return jax.tree.map(sample, spec.observations)


def random_batch(spec: EnvironmentSpec, batch_size: int, seed: int = 0
                 ) -> learning.Transition:
  """Random transitions with per-key rewards and unit discounts."""
  rng = np.random.default_rng(seed)
  ones = np.ones(batch_size, np.float32)
  return learning.Transition(
      observation=random_observation(spec, batch_size, rng),
      action=rng.uniform(-0.3, 0.3, (batch_size,) + spec.actions.shape).astype(
          np.float32),
      reward={'imitation': rng.uniform(0, 1, batch_size).astype(np.float32),
              'task': rng.integers(0, 2, batch_size).astype(np.float32)},
      discount={'imitation': ones, 'task': ones},
      next_observation=random_observation(spec, batch_size, rng))
