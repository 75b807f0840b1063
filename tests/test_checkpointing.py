"""Checkpoints: npz + JSON, exact round trips, atomic writes, fallback, refusals."""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from typing import NamedTuple

from absl import logging
from acme.utils import counting
import jax
import numpy as np
import pytest

from metamimic_jax import checkpointing
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINGERPRINT = {'domain': 'point_mass', 'batch_size': '8'}


class _Pair(NamedTuple):
  weights: np.ndarray
  bias: np.ndarray


class _Holder:
  """A Saveable whose state is a NamedTuple of arrays."""

  def __init__(self, value: float):
    self.state = _Pair(np.full((2, 3), value, np.float32), np.zeros(3, np.float32))

  def save(self):
    return self.state

  def restore(self, state):
    self.state = state


def _checkpointer(directory, holder, **kwargs):
  return checkpointing.Checkpointer(str(directory), {'holder': holder}, FINGERPRINT,
                                    **kwargs)


def _saved(directory, values):
  """Forced saves of holders with the given values, oldest first; their paths."""
  paths = []
  for value in values:
    paths.append(_checkpointer(directory, _Holder(value), keep=len(values)).save(
        force=True))
  return paths


def _learner(config, seed):
  builder, _, spec = helpers.point_mass_setup(config, num_demos=1)
  return builder.make_learner(jax.random.PRNGKey(seed), builder.make_networks(spec),
                              iter(()), spec)


@pytest.mark.parametrize('train_task_policy', [True, False])
def test_learner_and_counter_round_trip_exactly(tmp_path, train_task_policy):
  config = dataclasses.replace(helpers.TINY_CONFIG, train_task_policy=train_task_policy)
  learner, counter = _learner(config, seed=0), counting.Counter()
  counter.increment(actor_steps=120, walltime=1.5)
  path = checkpointing.Checkpointer(
      str(tmp_path), {'learner': learner, 'counter': counter}, FINGERPRINT).save(
          force=True)
  assert sorted(os.listdir(path)) == ['arrays.npz', 'manifest.json']

  fresh_learner, fresh_counter = _learner(config, seed=1), counting.Counter()
  assert checkpointing.Checkpointer(
      str(tmp_path), {'learner': fresh_learner, 'counter': fresh_counter},
      FINGERPRINT).restore()
  saved, restored = learner.save(), fresh_learner.save()
  # Same classes all the way down (TrainingState, optax's NamedTuples, None for an
  # untrained task agent), same leaves bit for bit.
  assert (jax.tree_util.tree_structure(restored) ==
          jax.tree_util.tree_structure(saved))
  assert (restored.task is None) == (not train_task_policy)
  for a, b in zip(jax.tree_util.tree_leaves(saved), jax.tree_util.tree_leaves(restored)):
    assert a.dtype == b.dtype and np.array_equal(a, b)
  assert fresh_counter.get_counts() == {'actor_steps': 120, 'walltime': 1.5}
  assert type(fresh_counter.get_counts()['actor_steps']) is int


def test_the_learner_nodes_pinned_state_restores_into_a_fresh_node(tmp_path):
  """The program's learner checkpoints the state it pinned; a fresh node (nothing pinned
  yet) restores it, reading its learner's live state as the template."""
  from metamimic_jax import distributed  # pylint: disable=import-outside-toplevel
  holder = _Holder(1.0)
  pinned = distributed._PinnedState(holder)  # pylint: disable=protected-access
  pinned.pin()
  holder.state = _Pair(np.full((2, 3), 2.0, np.float32), np.ones(3, np.float32))
  _checkpointer(tmp_path, pinned).save(force=True)
  fresh = _Holder(5.0)
  assert _checkpointer(
      tmp_path, distributed._PinnedState(fresh)).restore()  # pylint: disable=protected-access
  np.testing.assert_array_equal(fresh.state.weights, 1.0)  # As pinned, not as stepped on.
  np.testing.assert_array_equal(fresh.state.bias, 0.0)


def test_keeps_the_newest_checkpoints_and_no_temporary_files(tmp_path):
  holder = _Holder(0.0)
  checkpointer = _checkpointer(tmp_path, holder, keep=2)
  for value in range(4):
    holder.state = _Pair(np.full((2, 3), value, np.float32), np.zeros(3, np.float32))
    checkpointer.save(force=True)
  assert sorted(os.listdir(tmp_path)) == ['ckpt_2', 'ckpt_3']
  restored = _Holder(-1.0)
  assert _checkpointer(tmp_path, restored).restore()
  assert np.all(restored.state.weights == 3.0)


def test_first_save_comes_early_then_every_period(tmp_path, monkeypatch):
  now = [1000.0]
  monkeypatch.setattr(checkpointing.time, 'time', lambda: now[0])
  checkpointer = _checkpointer(tmp_path, _Holder(0.0), time_delta_minutes=5,
                               first_save_minutes=1)
  now[0] += 59
  assert checkpointer.save() is None
  now[0] += 2  # 61 s after the start.
  assert checkpointer.save().endswith('ckpt_0')
  now[0] += 299
  assert checkpointer.save() is None
  now[0] += 2
  assert checkpointer.save().endswith('ckpt_1')


@pytest.mark.parametrize('damage', ['truncate_arrays', 'garble_manifest',
                                    'remove_manifest', 'flip_array_bytes'])
def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, damage,
                                                                monkeypatch):
  _, newest = _saved(tmp_path, [1.0, 2.0])
  arrays, manifest = (os.path.join(newest, name) for name in ('arrays.npz',
                                                              'manifest.json'))
  if damage == 'truncate_arrays':
    os.truncate(arrays, os.path.getsize(arrays) // 2)
  elif damage == 'garble_manifest':
    with open(manifest, 'r+b') as f:
      f.write(b'\x00garbage')
  elif damage == 'remove_manifest':
    os.remove(manifest)
  else:  # Same length, one data byte changed: the zip CRC check must notice.
    with open(arrays, 'rb') as f:
      data = bytearray(f.read())
    at = data.index(np.full((2, 3), 2.0, np.float32).tobytes())
    data[at] ^= 0xFF
    with open(arrays, 'wb') as f:
      f.write(bytes(data))
  warnings = []
  monkeypatch.setattr(logging, 'warning', lambda *a: warnings.append(a[0] % a[1:]))
  restored = _Holder(-1.0)
  assert _checkpointer(tmp_path, restored).restore()
  assert np.all(restored.state.weights == 1.0)  # The one before.
  assert len(warnings) == 1 and newest in warnings[0], warnings


def test_no_usable_checkpoint_is_an_error_naming_the_file(tmp_path):
  (path,) = _saved(tmp_path, [1.0])
  with open(os.path.join(path, 'arrays.npz'), 'wb') as f:
    f.write(b'PK\x03\x04 cut short')
  with pytest.raises(checkpointing.CheckpointError,
                     match=f'no usable checkpoint in .*{path}/arrays.npz'):
    _checkpointer(tmp_path, _Holder(0.0)).restore()
  with pytest.raises(checkpointing.CheckpointError, match='no usable checkpoint'):
    checkpointing.check_directory(str(tmp_path), FINGERPRINT)


class _Exploit:
  """Unpickling this would create the marker file."""

  def __init__(self, marker):
    self._marker = marker

  def __reduce__(self):
    return open, (self._marker, 'w')


def test_old_pickle_checkpoints_are_refused_never_unpickled(tmp_path):
  marker = tmp_path / 'unpickled'
  directory = tmp_path / 'checkpoints'
  directory.mkdir()
  with open(directory / 'ckpt_0.pkl', 'wb') as f:
    pickle.dump({'fingerprint': FINGERPRINT, 'state': _Exploit(str(marker))}, f)
  for call in (lambda: _checkpointer(directory, _Holder(0.0)).restore(),
               lambda: checkpointing.check_directory(str(directory), FINGERPRINT)):
    with pytest.raises(checkpointing.CheckpointError,
                       match='ckpt_0.pkl is a checkpoint in the old pickle format.*'
                             'can execute arbitrary code'):
      call()
  assert not marker.exists()


def test_incompatible_fingerprint_is_refused_naming_the_differences(tmp_path):
  _saved(tmp_path, [1.0])
  other = {**FINGERPRINT, 'batch_size': '16'}
  with pytest.raises(checkpointing.CheckpointError,
                     match='incompatible configuration(.|\n)*batch_size: checkpoint 8, '
                           'requested 16'):
    checkpointing.Checkpointer(str(tmp_path), {'holder': _Holder(0.0)}, other).restore()


def test_a_config_field_newer_than_the_checkpoint_reads_as_its_default(tmp_path):
  _saved(tmp_path, [1.0])  # Its fingerprint predates the field episode_min_sigma.
  default = {**FINGERPRINT, 'episode_min_sigma': 'None'}
  holder = _Holder(0.0)
  checkpointing.Checkpointer(str(tmp_path), {'holder': holder}, default).restore()
  assert np.all(holder.state.weights == 1.0)
  changed = {**FINGERPRINT, 'episode_min_sigma': '0.1'}
  with pytest.raises(checkpointing.CheckpointError,
                     match='episode_min_sigma: checkpoint None, requested 0.1'):
    checkpointing.Checkpointer(str(tmp_path), {'holder': _Holder(0.0)}, changed).restore()
  unknown = {**FINGERPRINT, 'agent': 'task_only'}
  with pytest.raises(checkpointing.CheckpointError,
                     match='agent: checkpoint \\(absent\\), requested task_only'):
    checkpointing.Checkpointer(str(tmp_path), {'holder': _Holder(0.0)}, unknown).restore()


def test_a_state_of_another_shape_is_refused_naming_the_leaf(tmp_path):
  _saved(tmp_path, [1.0])
  holder = _Holder(0.0)
  holder.state = _Pair(np.zeros((4, 3), np.float32), np.zeros(3, np.float32))
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'ckpt_0: holder.weights: the checkpoint holds a '
                           r'float32\[2, 3\] array where this code has a '
                           r'float32\[4, 3\] array'):
    _checkpointer(tmp_path, holder).restore()
  assert np.all(holder.state.weights == 0.0)  # Nothing was restored.


def test_manifest_is_plain_json_with_fingerprint_and_structure(tmp_path):
  (path,) = _saved(tmp_path, [1.0])
  with open(os.path.join(path, 'manifest.json')) as f:
    manifest = json.load(f)
  assert manifest['fingerprint'] == FINGERPRINT
  holder = manifest['objects']['holder']
  assert holder['namedtuple'] == '_Pair'
  assert [field for field, _ in holder['fields']] == ['weights', 'bias']
  assert holder['fields'][0][1]['shape'] == [2, 3]


_FULL_DISK = """
import resource, sys
import numpy as np
from metamimic_jax import checkpointing
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
holder = type('H', (), {'save': lambda self: {'w': np.ones(1 << 20, np.float32)}})()
try:
  checkpointing.Checkpointer(sys.argv[1], {'h': holder}, {}).save(force=True)
except checkpointing.CheckpointError as e:
  sys.exit(f'error: {e}')
"""


def test_a_failed_write_leaves_nothing_behind(tmp_path):
  # RLIMIT_FSIZE makes writes past 64 KiB fail in the child, as on a full disk.
  result = subprocess.run([sys.executable, '-c', _FULL_DISK, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'error: {tmp_path}/ckpt_0: could not write the checkpoint ([Errno 27] File too '
      'large')
  assert not os.listdir(tmp_path)
