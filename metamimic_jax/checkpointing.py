"""Periodic, atomic checkpoints of Acme Saveables (learner, counter, ...) in a workdir.

A checkpoint records a fingerprint of the config it was made with; restoring under a
different fingerprint is refused with a message instead of silently mixing states.
"""

import glob
import os
import pickle
import time
from typing import Any, Mapping, Optional

from absl import logging
from acme import core
import jax
import numpy as np


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored here; the message says why."""


class Checkpointer:
  """Saves and restores `objects` together under `directory`/ckpt_<n>.pkl."""

  def __init__(self, directory: str, objects: Mapping[str, core.Saveable],
               fingerprint: str, time_delta_minutes: float = 5.0, keep: int = 2):
    self._directory = directory
    self._objects = dict(objects)
    self._fingerprint = fingerprint
    self._time_delta = time_delta_minutes * 60
    self._keep = keep
    self._last_save = time.time()
    os.makedirs(directory, exist_ok=True)

  @property
  def directory(self) -> str:
    return self._directory

  def _paths(self):
    return sorted(glob.glob(os.path.join(self._directory, 'ckpt_*.pkl')),
                  key=lambda p: int(p.rsplit('_', 1)[1].split('.')[0]))

  def save(self, force: bool = False) -> Optional[str]:
    """Saves if forced or `time_delta_minutes` passed since the last save."""
    if not force and time.time() - self._last_save < self._time_delta:
      return None
    self._last_save = time.time()
    paths = self._paths()
    number = int(paths[-1].rsplit('_', 1)[1].split('.')[0]) + 1 if paths else 0
    path = os.path.join(self._directory, f'ckpt_{number}.pkl')
    state = {name: _to_numpy(obj.save()) for name, obj in self._objects.items()}
    with open(path + '.tmp', 'wb') as f:
      pickle.dump({'fingerprint': self._fingerprint, 'state': state}, f)
    os.replace(path + '.tmp', path)
    for old in self._paths()[:-self._keep]:
      os.remove(old)
    logging.info('Saved checkpoint %s', path)
    return path

  def restore(self) -> bool:
    """Restores the newest checkpoint, if any; True if one was restored."""
    paths = self._paths()
    if not paths:
      return False
    checkpoint = read(paths[-1])
    if checkpoint['fingerprint'] != self._fingerprint:
      raise CheckpointError(
          f'{paths[-1]} was made with a different configuration; use another '
          f'--workdir or the original settings.\n  checkpoint: '
          f"{checkpoint['fingerprint']}\n  now:        {self._fingerprint}")
    missing = set(self._objects) - set(checkpoint['state'])
    if missing:
      raise CheckpointError(f'{paths[-1]} lacks {sorted(missing)}')
    for name, obj in self._objects.items():
      obj.restore(checkpoint['state'][name])
    logging.info('Restored checkpoint %s', paths[-1])
    return True


def read(path: str) -> Mapping[str, Any]:
  try:
    with open(path, 'rb') as f:
      return pickle.load(f)
  except (OSError, EOFError, pickle.UnpicklingError) as e:
    raise CheckpointError(f'{path}: unreadable checkpoint ({e})') from e


def _to_numpy(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))
