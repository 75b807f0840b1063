"""The MetaMimic imitation reward: similarity of what the agent sees to the demo frame.

Two twins of one formula: `imitation_reward` (JAX: pure, jittable, for learners and
anything batched with vmap) and `imitation_reward_numpy` (for environments, which pay
the reward one step at a time on the host, where a jitted call costs more than the
arithmetic). tests/test_rewards.py checks that they agree.
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
  reward = jnp.zeros((), jnp.float32)
  for group in groups:
    squared_distance = jnp.zeros((), jnp.float32)
    for key in group.keys:
      o, d = observation_t[key], demo_frame_t[key]
      chex.assert_equal_shape([o, d])
      squared_distance += jnp.sum(jnp.square(_as_float(o) - _as_float(d)))
    reward += group.weight * jnp.exp(-group.scale * squared_distance)
  return reward


def imitation_reward_numpy(
    observation_t: Mapping[str, np.ndarray],
    demo_frame_t: Mapping[str, np.ndarray],
    groups: Sequence[FeatureGroup],
) -> np.float32:
  """`imitation_reward` with numpy, one dot product per group (float32 distances)."""
  reward = 0.0
  for group in groups:
    difference = np.concatenate([_difference_numpy(observation_t[key], demo_frame_t[key])
                                 for key in group.keys])
    reward += group.weight * np.exp(-group.scale * np.dot(difference, difference))
  return np.float32(reward)


def _difference_numpy(o: np.ndarray, d: np.ndarray) -> np.ndarray:
  """o - d, flat, float32; uint8 pixels are scaled to [0, 1]."""
  o, d = np.asarray(o), np.asarray(d)
  if o.shape != d.shape:
    raise ValueError(f'observation shape {o.shape} differs from the demo frame\'s '
                     f'{d.shape}')
  if o.dtype == np.uint8:
    return (o.astype(np.float32) - d.astype(np.float32)).ravel() / np.float32(255)
  return (np.asarray(o, np.float32) - np.asarray(d, np.float32)).ravel()


def _as_float(x: chex.Array) -> chex.Array:
  """Features as float32; uint8 pixels are scaled to [0, 1]."""
  x = jnp.asarray(x)
  if x.dtype == jnp.uint8:
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)
