from acme import specs
import jax
import numpy as np
import pytest

from metamimic_jax import packing

SPEC = {'goal': {'x': specs.Array((1, 2), np.float32)},
        'observation': {'pixels': specs.Array((2, 2, 1), np.uint8),
                        'v': specs.Array((3,), np.float32),
                        'z': specs.Array((), np.float32)}}


def _observation(offset=0):
  return {'goal': {'x': np.array([[1, 2]], np.float32) + offset},
          'observation': {'pixels': np.arange(4, dtype=np.uint8).reshape(2, 2, 1) + offset,
                          'v': np.array([3, 4, 5], np.float32) + offset,
                          'z': np.float32(6 + offset)}}


def test_pack_orders_features_by_sorted_keys_and_keeps_images_apart():
  packer = packing.ObservationPacker(SPEC)
  features, pixels = packer.pack(_observation())
  # Feature leaves in sorted-key order: goal/x, observation/v, observation/z.
  np.testing.assert_array_equal(features, [1, 2, 3, 4, 5, 6])
  assert features.dtype == np.float32 and pixels.dtype == np.uint8
  assert [s.shape for s in packer.spec] == [(6,), (2, 2, 1)]
  with pytest.raises(ValueError, match=r"the observation lacks \['observation'\]"):
    packer.pack({'goal': _observation()['goal']})
  with pytest.raises(ValueError, match='the observation has 2 arrays'):
    packer.pack({'goal': _observation()['goal'], 'observation': {'v': np.zeros(3)}})


@pytest.mark.parametrize('jit', [False, True])
def test_unpack_restores_a_batch_of_observations(jit):
  packer = packing.ObservationPacker(SPEC)
  observations = [_observation(0), _observation(10)]
  packed = [packer.pack(o) for o in observations]
  batch = tuple(np.stack(column) for column in zip(*packed))
  unpack = jax.jit(packer.unpack) if jit else packer.unpack
  unpacked = unpack(batch)
  expected = jax.tree.map(lambda *x: np.stack(x), *observations)
  jax.tree.map(np.testing.assert_array_equal, unpacked, expected)
  jax.tree.map(lambda got, want: np.testing.assert_equal(got.dtype, want.dtype),
               unpacked, expected)


def test_pack_casts_other_dtypes_and_takes_images_alone():
  spec = {'i': specs.Array((2,), np.int32), 'd': specs.Array((), np.float64)}
  features, = packing.ObservationPacker(spec).pack(
      {'i': np.array([7, -1], np.int32), 'd': np.float64(0.5)})
  np.testing.assert_array_equal(features, [0.5, 7, -1])
  assert features.dtype == np.float32
  features, pixels = packing.ObservationPacker(
      {'pixels': specs.Array((2, 2, 1), np.uint8)}).pack({'pixels': np.ones((2, 2, 1),
                                                                            np.uint8)})
  assert features.shape == (0,) and features.dtype == np.float32 and pixels.sum() == 4


def test_pack_all_stacks_what_pack_gives_each_observation():
  packer = packing.ObservationPacker(SPEC)
  observations = [_observation(0), _observation(10), _observation(20)]
  features, pixels = packer.pack_all(observations)
  packed = [packer.pack(o) for o in observations]
  np.testing.assert_array_equal(features, np.stack([p[0] for p in packed]))
  np.testing.assert_array_equal(pixels, np.stack([p[1] for p in packed]))
  assert features.shape == (3, 6) and features.dtype == np.float32
  wrong = _observation()
  wrong['observation']['v'] = np.zeros(4, np.float32)
  with pytest.raises(ValueError, match='the observations have 19 features in all; their '
                     'spec has 6 each'):
    packer.pack_all([_observation(), wrong, _observation()])
