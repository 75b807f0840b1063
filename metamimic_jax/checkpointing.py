"""Periodic, atomic checkpoints of Acme Saveables (learner, counter, ...) in a workdir.

A checkpoint records a fingerprint of the config it was made with; restoring under a
different fingerprint is refused with a message instead of silently mixing states.
"""

import ast
import dataclasses
import glob
import os
import pickle
import time
from typing import Any, Dict, Mapping, Optional, Tuple

from absl import logging
from acme import core
import jax
import numpy as np

from metamimic_jax.config import FeatureGroup, MetaMimicConfig


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored here; the message says why."""


TASK_ONLY = 'task_only'  # The fingerprint's 'agent' of the task-only D4PG baseline.


def fingerprint(domain_name: str, config: MetaMimicConfig,
                task_only: bool = False) -> Dict[str, str]:
  """What a checkpoint must match to be resumed: the domain, every config field, and
  for the task-only baseline its agent (MetaMimic's checkpoints carry no 'agent')."""
  return {'domain': domain_name,
          **{k: repr(v) for k, v in dataclasses.asdict(config).items()},
          **({'agent': TASK_ONLY} if task_only else {})}


class Checkpointer:
  """Saves and restores `objects` together under `directory`/ckpt_<n>.pkl."""

  def __init__(self, directory: str, objects: Mapping[str, core.Saveable],
               fingerprint: Mapping[str, str], time_delta_minutes: float = 5.0, keep: int = 2):
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

  def save(self, force: bool = False) -> Optional[str]:
    """Saves if forced or `time_delta_minutes` passed since the last save."""
    if not force and time.time() - self._last_save < self._time_delta:
      return None
    self._last_save = time.time()
    paths = checkpoint_paths(self._directory)
    number = _number(paths[-1]) + 1 if paths else 0
    path = os.path.join(self._directory, f'ckpt_{number}.pkl')
    state = {name: _to_numpy(obj.save()) for name, obj in self._objects.items()}
    with open(path + '.tmp', 'wb') as f:
      pickle.dump({'fingerprint': self._fingerprint, 'state': state}, f)
    os.replace(path + '.tmp', path)
    for old in checkpoint_paths(self._directory)[:-self._keep]:
      os.remove(old)
    logging.info('Saved checkpoint %s', path)
    return path

  def restore(self) -> bool:
    """Restores the newest checkpoint, if any; True if one was restored."""
    paths = checkpoint_paths(self._directory)
    if not paths:
      return False
    checkpoint = read(paths[-1])
    check_fingerprint(paths[-1], checkpoint, self._fingerprint)
    missing = set(self._objects) - set(checkpoint['state'])
    if missing:
      raise CheckpointError(f'{paths[-1]} lacks {sorted(missing)}')
    for name, obj in self._objects.items():
      obj.restore(checkpoint['state'][name])
    logging.info('Restored checkpoint %s', paths[-1])
    return True


def checkpoint_paths(directory: str):
  """The checkpoints in `directory`, oldest first."""
  return sorted(glob.glob(os.path.join(directory, 'ckpt_*.pkl')), key=_number)


def _number(path: str) -> int:
  return int(os.path.basename(path)[len('ckpt_'):-len('.pkl')])


def check_fingerprint(path: str, checkpoint: Mapping[str, Any],
                      fingerprint: Mapping[str, str]) -> None:
  """Raises CheckpointError, naming the differences, unless the fingerprints match."""
  found = checkpoint['fingerprint']
  differences = [f'  {key}: checkpoint {found.get(key)}, requested {fingerprint.get(key)}'
                 for key in sorted(set(found) | set(fingerprint))
                 if found.get(key) != fingerprint.get(key)]
  if differences:
    raise CheckpointError(
        f'{path} was made with an incompatible configuration; use another --workdir, '
        'or the original flags to resume. Differences:\n' + '\n'.join(differences))


def check_directory(directory: str, fingerprint: Mapping[str, str]) -> None:
  """Raises CheckpointError if the newest checkpoint in `directory` cannot be resumed."""
  paths = checkpoint_paths(directory)
  if paths:
    check_fingerprint(paths[-1], read(paths[-1]), fingerprint)


def read(path: str) -> Mapping[str, Any]:
  try:
    with open(path, 'rb') as f:
      return pickle.load(f)
  except (OSError, EOFError, pickle.UnpicklingError) as e:
    raise CheckpointError(f'{path}: unreadable checkpoint ({e})') from e


def _to_numpy(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def newest_fingerprint(directory: str) -> Optional[Mapping[str, str]]:
  """The fingerprint of the newest checkpoint in `directory` (None: no checkpoint)."""
  paths = checkpoint_paths(directory)
  return read(paths[-1])['fingerprint'] if paths else None


def config_from_fingerprint(found: Mapping[str, str]
                            ) -> Tuple[str, MetaMimicConfig, bool]:
  """The domain name, config and task-only flag a checkpoint was made with, read back
  from its fingerprint (field reprs, parsed with ast.literal_eval: nothing is executed).

  Raises CheckpointError if a field is unknown here or unreadable.
  """
  fields = {field.name for field in dataclasses.fields(MetaMimicConfig)}
  unknown = sorted(set(found) - fields - {'domain', 'agent'})
  if unknown or 'domain' not in found:
    raise CheckpointError(f'fingerprint fields {unknown or ["domain"]} are '
                          f'{"unknown to" if unknown else "missing in"} this version')
  values = {}
  for name in fields & set(found):
    try:
      values[name] = ast.literal_eval(found[name])
    except (SyntaxError, ValueError) as e:
      raise CheckpointError(f'fingerprint field {name}={found[name]!r}: {e}') from e
  try:
    # `fingerprint` wrote the feature groups as dicts (dataclasses.asdict).
    values['reward_groups'] = tuple(FeatureGroup(**group)
                                    for group in values.get('reward_groups', ()))
    return (found['domain'], MetaMimicConfig(**values),
            found.get('agent') == TASK_ONLY)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f'fingerprint is not a valid config: {e}') from e
