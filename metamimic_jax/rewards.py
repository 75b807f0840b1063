"""The MetaMimic imitation reward: similarity of what the agent sees to the demo frame."""

from typing import Mapping, Sequence

import chex
import jax.numpy as jnp

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
  reward = jnp.zeros((), jnp.float32)
  for group in groups:
    squared_distance = jnp.zeros((), jnp.float32)
    for key in group.keys:
      o, d = observation_t[key], demo_frame_t[key]
      chex.assert_equal_shape([o, d])
      squared_distance += jnp.sum(jnp.square(_as_float(o) - _as_float(d)))
    reward += group.weight * jnp.exp(-group.scale * squared_distance)
  return reward


def _as_float(x: chex.Array) -> chex.Array:
  """Features as float32; uint8 pixels are scaled to [0, 1]."""
  x = jnp.asarray(x)
  if x.dtype == jnp.uint8:
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)
