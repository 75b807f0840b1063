"""The demonstration file format: round trips, and every kind of bad file refused."""

import dataclasses

import h5py
import numpy as np
import pytest

from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import demonstrators
from metamimic_jax.environments import point_mass

DOMAIN = point_mass.PointMassDomain()
SHAPES = {'position': (2,), 'velocity': (2,)}


@pytest.fixture(scope='module')
def demos():
  return [demonstrators.record_demonstration(DOMAIN, seed) for seed in range(3)]


@pytest.fixture
def path(tmp_path, demos):
  path = str(tmp_path / 'demos.h5')
  demos_lib.save(path, demos, DOMAIN.name)
  return path


def test_round_trip_keeps_everything(path, demos):
  loaded = demos_lib.load(path, DOMAIN.name, SHAPES)
  assert len(loaded) == len(demos)
  for original, copy in zip(demos, loaded):
    assert copy.seed == original.seed and copy.length == original.length
    np.testing.assert_array_equal(copy.task_rewards, original.task_rewards)
    for key in original.observations:
      np.testing.assert_array_equal(copy.observations[key], original.observations[key])
      assert copy.observations[key].dtype == np.float32
    for key in original.initial_state:
      np.testing.assert_array_equal(copy.initial_state[key], original.initial_state[key])


def test_restoring_a_loaded_demo_reproduces_its_first_frame(path):
  demo = demos_lib.load(path)[1]
  environment = DOMAIN.make_environment(seed=99)
  timestep = DOMAIN.restore_state(environment, demo.initial_state)
  for key, frames in demo.observations.items():
    np.testing.assert_array_equal(timestep.observation[key], frames[0])


def test_split_is_seeded_and_disjoint(demos):
  train, held_out = demos_lib.split(demos, 0.34, seed=1)
  assert len(train) == 2 and len(held_out) == 1
  assert {d.seed for d in train}.isdisjoint({d.seed for d in held_out})
  again, _ = demos_lib.split(demos, 0.34, seed=1)
  assert [d.seed for d in again] == [d.seed for d in train]


def _refused(path, match, **kwargs):
  with pytest.raises(demos_lib.DemonstrationError, match=match) as error:
    demos_lib.load(path, **kwargs)
  assert path in str(error.value)


def test_missing_file(tmp_path):
  _refused(str(tmp_path / 'absent.h5'), 'no such demonstration file')


def test_truncated_file(path):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  _refused(path, 'unreadable or truncated')


def test_not_hdf5(tmp_path):
  path = str(tmp_path / 'text.h5')
  with open(path, 'w') as f:
    f.write('not a demonstration file\n')
  _refused(path, 'unreadable or truncated')


@pytest.mark.parametrize('attribute, value, match', [
    ('format', 'something-else', 'not a metamimic-demonstrations file'),
    ('version', 99, 'format version 99'),
])
def test_wrong_format_or_version(path, attribute, value, match):
  with h5py.File(path, 'a') as f:
    f.attrs[attribute] = value
  _refused(path, match)


def test_wrong_domain(path):
  _refused(path, "recorded in domain 'point_mass', expected 'jaco_stack'",
           domain='jaco_stack')


def test_wrong_shape_for_the_environment(path):
  _refused(path, r'observations/position frames have shape \(2,\)',
           observation_shapes={'position': (3,), 'velocity': (2,)})
  _refused(path, r"lacks observation keys \['pixels'\]",
           observation_shapes={**SHAPES, 'pixels': (64, 64, 3)})


def test_wrong_dtype(path):
  with h5py.File(path, 'a') as f:
    data = f['demo_00001/observations/position'][()]
    del f['demo_00001/observations/position']
    f['demo_00001/observations/position'] = data.astype(np.float64)
  _refused(path, 'demo_00001: observations/position has dtype float64')


def test_nan_values(path):
  with h5py.File(path, 'a') as f:
    f['demo_00002/observations/velocity'][5, 0] = np.nan
  _refused(path, 'demo_00002: observations/velocity holds NaN')


def test_length_mismatch_between_observations_and_rewards(path):
  with h5py.File(path, 'a') as f:
    rewards = f['demo_00000/task_rewards'][()]
    del f['demo_00000/task_rewards']
    f['demo_00000/task_rewards'] = rewards[:-3]
  _refused(path, 'demo_00000: observations/.* expected .* frames')


def test_missing_part_of_a_demo(path):
  with h5py.File(path, 'a') as f:
    del f['demo_00001/initial_state']
  _refused(path, "demo_00001: missing 'initial_state'")


def test_no_demos(path):
  with h5py.File(path, 'a') as f:
    for name in list(f):
      del f[name]
  _refused(path, 'holds no demonstrations')


def test_save_refuses_bad_demos_and_leaves_no_file(tmp_path, demos):
  path = str(tmp_path / 'bad.h5')
  bad = dataclasses.replace(
      demos[0], observations={**demos[0].observations,
                              'position': demos[0].observations['position'][:-1]})
  with pytest.raises(demos_lib.DemonstrationError, match='demo 1'):
    demos_lib.save(path, [demos[1], bad], DOMAIN.name)
  with pytest.raises(demos_lib.DemonstrationError, match='empty'):
    demos_lib.save(path, [], DOMAIN.name)
  assert not list(tmp_path.iterdir())
