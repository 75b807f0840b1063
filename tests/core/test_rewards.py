import jax
import numpy as np
import pytest

from metamimic_jax.config import FeatureGroup, MetaMimicConfig
from metamimic_jax.rewards import imitation_reward, imitation_reward_numpy

GROUPS = (FeatureGroup(('x',), 0.25, 2.0), FeatureGroup(('y', 'z'), 0.75, 0.5))


def test_hand_computed_value():
  observation = {'x': np.array([1., 2.]), 'y': np.array([0.]), 'z': np.array([1., 1.])}
  demo = {'x': np.array([1., 1.]), 'y': np.array([2.]), 'z': np.array([0., 0.])}
  # Group x: ||.||^2 = 1 -> 0.25 e^-2; group (y, z): 4 + 2 = 6 -> 0.75 e^-(0.5 * 6).
  expected = 0.25 * np.exp(-2.0) + 0.75 * np.exp(-3.0)
  np.testing.assert_allclose(imitation_reward(observation, demo, GROUPS), expected,
                             rtol=1e-6)


def test_perfect_imitation_scores_one_and_far_scores_near_zero():
  demo = {'x': np.array([0.3, -1.]), 'y': np.array([2.]), 'z': np.array([5., 6.])}
  np.testing.assert_allclose(imitation_reward(demo, demo, GROUPS), 1.0)
  far = {k: v + 100.0 for k, v in demo.items()}
  assert float(imitation_reward(far, demo, GROUPS)) < 1e-6


def test_uint8_pixels_are_compared_in_unit_range():
  groups = (FeatureGroup(('pixels',), 1.0, 0.5),)
  observation = {'pixels': np.full((2, 2, 1), 255, np.uint8)}
  demo = {'pixels': np.zeros((2, 2, 1), np.uint8)}
  np.testing.assert_allclose(imitation_reward(observation, demo, groups), np.exp(-2.0),
                             rtol=1e-6)


def test_jit_and_vmap_by_the_caller():
  batch = {'x': np.zeros((3, 2)), 'y': np.zeros((3, 1)), 'z': np.ones((3, 2))}
  rewards = jax.jit(jax.vmap(lambda o, d: imitation_reward(o, d, GROUPS)))(batch, batch)
  np.testing.assert_allclose(rewards, np.ones(3))


def test_shape_mismatch_is_refused():
  with pytest.raises(AssertionError):
    imitation_reward({'x': np.zeros(2)}, {'x': np.zeros(3)},
                     (FeatureGroup(('x',), 1.0, 1.0),))


def test_config_refuses_weights_not_summing_to_one():
  with pytest.raises(ValueError, match='sum to 1'):
    MetaMimicConfig(reward_groups=(FeatureGroup(('x',), 0.5, 1.0),))


def _random_frames(rng, dtype=np.float32):
  shapes = {'x': (2,), 'y': (1,), 'z': (2,)}
  return [{k: rng.normal(scale=0.5, size=s).astype(dtype) for k, s in shapes.items()}
          for _ in range(2)]


def test_numpy_twin_matches_jax():
  rng = np.random.default_rng(0)
  for _ in range(20):
    observation, demo = _random_frames(rng)
    expected = imitation_reward(observation, demo, GROUPS)
    actual = imitation_reward_numpy(observation, demo, GROUPS)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
  # The hand-computed case, a perfect match and float64 inputs.
  observation = {'x': np.array([1., 2.]), 'y': np.array([0.]), 'z': np.array([1., 1.])}
  demo = {'x': np.array([1., 1.]), 'y': np.array([2.]), 'z': np.array([0., 0.])}
  np.testing.assert_allclose(imitation_reward_numpy(observation, demo, GROUPS),
                             0.25 * np.exp(-2.0) + 0.75 * np.exp(-3.0), rtol=1e-6)
  assert imitation_reward_numpy(demo, demo, GROUPS) == 1.0


def test_numpy_twin_matches_jax_on_uint8_pixels():
  groups = (FeatureGroup(('pixels',), 0.5, 0.01), FeatureGroup(('x',), 0.5, 3.0))
  rng = np.random.default_rng(1)
  for _ in range(10):
    frames = [{'pixels': rng.integers(0, 256, (4, 4, 3)).astype(np.uint8),
               'x': rng.normal(size=3).astype(np.float32)} for _ in range(2)]
    np.testing.assert_allclose(imitation_reward_numpy(*frames, groups),
                               imitation_reward(*frames, groups), rtol=1e-6, atol=1e-7)
  observation = {'pixels': np.full((2, 2, 1), 255, np.uint8), 'x': np.zeros(3)}
  demo = {'pixels': np.zeros((2, 2, 1), np.uint8), 'x': np.zeros(3)}
  # 4 pixels, each 1 apart in unit range: 0.5 e^(-0.04) + 0.5.
  np.testing.assert_allclose(imitation_reward_numpy(observation, demo, groups),
                             0.5 * np.exp(-0.04) + 0.5, rtol=1e-6)


def test_numpy_twin_refuses_shape_mismatch():
  with pytest.raises(ValueError, match='differs'):
    imitation_reward_numpy({'x': np.zeros(2)}, {'x': np.zeros(3)},
                           (FeatureGroup(('x',), 1.0, 1.0),))
