"""The MetaMimic imitation reward: similarity of what the agent sees to the demo frame.

Two twins of one formula: `imitation_reward` (JAX: pure, jittable, for learners and
anything batched with vmap) and `imitation_reward_numpy` (for environments, which pay
the reward one step at a time on the host, where a jitted call costs more than the
arithmetic; an environment computes the demonstration's `group_features` once an
episode and calls `imitation_reward_of_features`). tests/core/test_rewards.py checks that
they agree.
"""

import math
from typing import List, Mapping, Sequence

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
  for group in groups:
    for key in group.keys:
      o, d = np.shape(observation_t[key]), np.shape(demo_frame_t[key])
      if o != d:
        raise ValueError(f'observation shape {o} of {key!r} differs from the demo '
                         f'frame\'s {d}')
  return imitation_reward_of_features(group_features(observation_t, groups),
                                      group_features(demo_frame_t, groups), groups)


def group_features(frames: Mapping[str, np.ndarray], groups: Sequence[FeatureGroup],
                   batch_dims: int = 0) -> List[np.ndarray]:
  """Each group's features of `frames`, flat float32 (uint8 pixels scaled to [0, 1]),
  after `batch_dims` leading dimensions: an environment computes a demonstration's once
  per episode (batch_dims=1) and its observation's once a step."""
  return [np.concatenate([_flat_float32(frames[key], batch_dims) for key in group.keys],
                         axis=-1) for group in groups]


def imitation_reward_of_features(observed: Sequence[np.ndarray],
                                 target: Sequence[np.ndarray],
                                 groups: Sequence[FeatureGroup]) -> np.float32:
  """`imitation_reward_numpy` of `group_features` of an observation and a demo frame."""
  reward = 0.0
  for group, o, d in zip(groups, observed, target):
    difference = o - d
    # math.exp of a Python float: a tenth of np.exp's time on a numpy scalar.
    reward += group.weight * math.exp(-group.scale * float(np.dot(difference,
                                                                   difference)))
  return np.float32(reward)


def _flat_float32(x: np.ndarray, batch_dims: int) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == batch_dims + 1 and x.dtype == np.float32:  # As body features are.
    return x
  flat = x.reshape(x.shape[:batch_dims] + (-1,))
  if x.dtype == np.uint8:
    return flat.astype(np.float32) / np.float32(255)
  return flat.astype(np.float32, copy=False)


def _as_float(x: chex.Array) -> chex.Array:
  """Features as float32; uint8 pixels are scaled to [0, 1]."""
  x = jnp.asarray(x)
  if x.dtype == jnp.uint8:
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)
