"""The MetaMimic imitation reward: similarity of what the agent sees to the demo frame.

One formula, two array libraries: `imitation_reward` (JAX: pure, jittable, for learners
and anything batched with vmap) and `imitation_reward_numpy` (numpy: for environments,
which pay the reward one step at a time on the host, where a jitted call costs more
than the arithmetic).
"""

from typing import Mapping, Sequence

import chex
import jax.numpy as jnp
import numpy as np

from metamimic_jax.config import FeatureGroup


def imitation_reward(
    observation_t: Mapping[str, chex.Array],
    demo_frame_t: Mapping[str, chex.Array],
    groups: Sequence[FeatureGroup],
) -> chex.Array:
  """r_t = sum_k beta_k exp(-w_k ||o^k_t - d^k_t||^2), unbatched.

  Args:
    observation_t: the agent's observation o_t (the frame after acting), by key.
    demo_frame_t: the demonstration frame d_t the agent should match, by key.
    groups: feature groups; their weights sum to 1 so the reward lies in [0, 1].

  Returns:
    A scalar; exactly 1 when every grouped feature matches the demonstration.
  """
  return _imitation_reward(jnp, observation_t, demo_frame_t, groups)


def imitation_reward_numpy(
    observation_t: Mapping[str, np.ndarray],
    demo_frame_t: Mapping[str, np.ndarray],
    groups: Sequence[FeatureGroup],
) -> np.float32:
  """`imitation_reward` computed with numpy, as a float32 scalar."""
  return np.float32(_imitation_reward(np, observation_t, demo_frame_t, groups))


def _imitation_reward(xp, observation_t, demo_frame_t, groups):
  """The formula, with `xp` the array library (jax.numpy or numpy), in float32."""
  reward = xp.zeros((), xp.float32)
  for group in groups:
    squared_distance = xp.zeros((), xp.float32)
    for key in group.keys:
      o, d = observation_t[key], demo_frame_t[key]
      chex.assert_equal_shape([o, d])
      squared_distance += xp.sum(xp.square(_as_float(xp, o) - _as_float(xp, d)))
    reward += xp.float32(group.weight) * xp.exp(xp.float32(-group.scale) *
                                                squared_distance)
  return reward


def _as_float(xp, x: chex.Array) -> chex.Array:
  """Features as float32; uint8 pixels are scaled to [0, 1]."""
  x = xp.asarray(x)
  if x.dtype == xp.uint8:
    return x.astype(xp.float32) / xp.float32(255)
  return x.astype(xp.float32)
