"""Periodic, atomic checkpoints of Acme Saveables (learner, counter, ...) in a workdir.

A checkpoint is a directory `ckpt_<n>` holding `arrays.npz` (every array of every
object's state, read back with allow_pickle=False) and `manifest.json` (plain data: the
fingerprint, each state's tree structure with its Python scalars, and the arrays'
shapes and dtypes). Loading executes nothing: the structure is rebuilt against the live
object's own state, whose classes (TrainingState, optax states, ...) it reuses. Old
pickle checkpoints (`ckpt_<n>.pkl`) are refused, never unpickled.

A checkpoint records a fingerprint of the config it was made with; restoring under a
different fingerprint is refused with a message instead of silently mixing states.
A truncated or corrupted newest checkpoint is skipped with a warning for the one before.
"""

import ast
import dataclasses
import glob
import json
import os
import re
import shutil
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple
import zipfile

from absl import logging
from acme import core
import jax
import numpy as np

from metamimic_jax.config import FeatureGroup, MetaMimicConfig

FORMAT_NAME = 'metamimic-checkpoint'
FORMAT_VERSION = 1
MANIFEST_FILE = 'manifest.json'
ARRAYS_FILE = 'arrays.npz'
# The first save comes this soon (or after the period, if shorter), so that a short run
# has a checkpoint early; later saves follow the period.
FIRST_SAVE_MINUTES = 1.0
_NAME = re.compile(r'ckpt_(\d+)$')
_PICKLE_NAME = re.compile(r'ckpt_\d+\.pkl$')
_TEMP_PREFIX = '.tmp_'
_SCALARS = (bool, int, float, str)


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored or written here; the message says why."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint whose files are missing, truncated or malformed."""


TASK_ONLY = 'task_only'  # The fingerprint's 'agent' of the task-only D4PG baseline.


def fingerprint(domain_name: str, config: MetaMimicConfig,
                task_only: bool = False) -> Dict[str, str]:
  """What a checkpoint must match to be resumed: the domain, every config field, and
  for the task-only baseline its agent (MetaMimic's checkpoints carry no 'agent')."""
  return {'domain': domain_name, **_config_fields(config),
          **({'agent': TASK_ONLY} if task_only else {})}


def _config_fields(config: MetaMimicConfig) -> Dict[str, str]:
  """Every config field as its fingerprint writes it."""
  return {k: repr(v) for k, v in dataclasses.asdict(config).items()}


class Checkpointer:
  """Saves and restores `objects` together under `directory`/ckpt_<n>/, keeping `keep`."""

  def __init__(self, directory: str, objects: Mapping[str, core.Saveable],
               fingerprint: Mapping[str, str], time_delta_minutes: float = 5.0,
               keep: int = 2, first_save_minutes: float = FIRST_SAVE_MINUTES):
    self._directory = directory
    self._objects = dict(objects)
    self._fingerprint = dict(fingerprint)
    self._time_delta = time_delta_minutes * 60
    self._keep = keep
    self._next_save = time.time() + min(first_save_minutes * 60, self._time_delta)
    os.makedirs(directory, exist_ok=True)
    for leftover in glob.glob(os.path.join(directory, _TEMP_PREFIX + '*')):
      shutil.rmtree(leftover, ignore_errors=True)  # From a save that was cut short.

  @property
  def directory(self) -> str:
    return self._directory

  def save(self, force: bool = False) -> Optional[str]:
    """Saves if forced or when due; returns the checkpoint's path, None if not due.

    Raises CheckpointError (naming the directory) if it cannot be written; nothing
    half-written is left.
    """
    if not force and time.time() < self._next_save:
      return None
    self._next_save = time.time() + self._time_delta
    paths = checkpoint_paths(self._directory)
    number = _number(paths[-1]) + 1 if paths else 0
    path = os.path.join(self._directory, f'ckpt_{number}')
    arrays = {}
    manifest = {'format': FORMAT_NAME, 'version': FORMAT_VERSION,
                'fingerprint': self._fingerprint, 'saved_at': time.time(),
                'objects': {name: _describe(jax.device_get(obj.save()), name, arrays)
                            for name, obj in self._objects.items()}}
    _write_atomically(path, manifest, arrays)
    for old in checkpoint_paths(self._directory)[:-self._keep]:
      shutil.rmtree(old, ignore_errors=True)
    logging.info('Saved checkpoint %s', path)
    return path

  def restore(self) -> bool:
    """Restores the newest usable checkpoint, if any; True if one was restored.

    Raises CheckpointError for an incompatible checkpoint, an old pickle, or when no
    checkpoint in the directory can be read.
    """
    found = newest_usable(self._directory)
    if found is None:
      return False
    path, manifest, arrays = found
    check_fingerprint(path, manifest, self._fingerprint)
    missing = set(self._objects) - set(manifest['objects'])
    if missing:
      raise CheckpointError(f'{path} lacks {sorted(missing)}')
    states = {name: _rebuild(manifest['objects'][name], arrays,
                             jax.device_get(obj.save()), f'{path}: {name}')
              for name, obj in self._objects.items()}
    for name, obj in self._objects.items():
      obj.restore(states[name])
    logging.info('Restored checkpoint %s', path)
    return True


def checkpoint_paths(directory: str) -> List[str]:
  """The checkpoints in `directory`, oldest first."""
  paths = [p for p in glob.glob(os.path.join(directory, 'ckpt_*'))
           if _NAME.match(os.path.basename(p))]
  return sorted(paths, key=_number)


def _number(path: str) -> int:
  return int(_NAME.match(os.path.basename(path)).group(1))


def newest_usable(directory: str
                  ) -> Optional[Tuple[str, Dict[str, Any], Dict[str, np.ndarray]]]:
  """(path, manifest, arrays) of the newest readable checkpoint; None if there is none.

  Unreadable newer checkpoints are skipped with a warning. Raises CheckpointError if the
  directory holds old pickle checkpoints, or checkpoints of which none can be read.
  """
  pickles = sorted(p for p in glob.glob(os.path.join(directory, 'ckpt_*.pkl'))
                   if _PICKLE_NAME.match(os.path.basename(p)))
  if pickles:
    raise CheckpointError(
        f'{pickles[-1]} is a checkpoint in the old pickle format, which is refused: '
        'loading a pickle can execute arbitrary code. Move the pickle files out of '
        f'{directory} (or use another --workdir) to start afresh.')
  paths = checkpoint_paths(directory)
  problems = []
  for path in reversed(paths):
    try:
      manifest, arrays = read(path)
    except CorruptCheckpointError as e:
      logging.warning('Skipping checkpoint %s; trying the one before.', e)
      problems.append(str(e))
      continue
    return path, manifest, arrays
  if problems:
    raise CheckpointError(f'no usable checkpoint in {directory}: ' + '; '.join(problems))
  return None


def read(path: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
  """(manifest, arrays) of the checkpoint at `path`; CorruptCheckpointError if bad."""
  manifest_path = os.path.join(path, MANIFEST_FILE)
  arrays_path = os.path.join(path, ARRAYS_FILE)
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise CorruptCheckpointError(f'{manifest_path}: unreadable manifest ({e})') from e
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT_NAME:
    raise CorruptCheckpointError(f'{manifest_path}: not a {FORMAT_NAME} manifest')
  if manifest.get('version') != FORMAT_VERSION:
    raise CheckpointError(f'{manifest_path}: format version {manifest.get("version")}, '
                          f'this code reads version {FORMAT_VERSION}')
  if not (isinstance(manifest.get('fingerprint'), dict) and
          isinstance(manifest.get('objects'), dict)):
    raise CorruptCheckpointError(f'{manifest_path}: manifest lacks fingerprint or objects')
  try:
    npz = np.load(arrays_path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise ValueError('not an npz archive')
    with npz:
      arrays = {key: npz[key] for key in npz.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise CorruptCheckpointError(f'{arrays_path}: unreadable arrays ({e})') from e
  try:
    for name, tree in manifest['objects'].items():
      _check_arrays(tree, arrays, f'{arrays_path}: {name}')
  except (KeyError, TypeError, AttributeError) as e:
    raise CorruptCheckpointError(f'{manifest_path}: malformed manifest ({e!r})') from e
  return manifest, arrays


# A config field added after a checkpoint was made reads there as its default.
_DEFAULT_CONFIG_FIELDS = _config_fields(MetaMimicConfig())


def check_fingerprint(path: str, manifest: Mapping[str, Any],
                      fingerprint: Mapping[str, str]) -> None:
  """Raises CheckpointError, naming the differences, unless the fingerprints match."""
  found = {**{key: value for key, value in _DEFAULT_CONFIG_FIELDS.items()
              if key in fingerprint}, **manifest['fingerprint']}
  differences = [f'  {key}: checkpoint {found.get(key, "(absent)")}, '
                 f'requested {fingerprint.get(key, "(absent)")}'
                 for key in sorted(set(found) | set(fingerprint))
                 if found.get(key) != fingerprint.get(key)]
  if differences:
    raise CheckpointError(
        f'{path} was made with an incompatible configuration; use another --workdir, '
        'or the original flags to resume. Differences:\n' + '\n'.join(differences))


def check_directory(directory: str, fingerprint: Mapping[str, str]) -> None:
  """Raises CheckpointError if the checkpoints in `directory` cannot be resumed."""
  found = newest_usable(directory)
  if found is not None:
    check_fingerprint(found[0], found[1], fingerprint)


def _write_atomically(path: str, manifest: Dict[str, Any],
                      arrays: Dict[str, np.ndarray]) -> None:
  """Writes both files into a temporary directory, syncs them, then renames it to path."""
  directory = os.path.dirname(path)
  temp = os.path.join(directory, f'{_TEMP_PREFIX}{os.path.basename(path)}_{os.getpid()}')
  try:
    os.makedirs(temp)
    with open(os.path.join(temp, ARRAYS_FILE), 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    with open(os.path.join(temp, MANIFEST_FILE), 'w') as f:
      json.dump(manifest, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    _fsync_directory(temp)
    os.replace(temp, path)
    _fsync_directory(directory)
  except OSError as e:
    shutil.rmtree(temp, ignore_errors=True)
    raise CheckpointError(f'{path}: could not write the checkpoint ({e})') from e


def _fsync_directory(directory: str) -> None:
  descriptor = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


# A state's tree, as plain JSON. Nodes: {'dict': [[key, node], ...]}, {'list': [...]},
# {'tuple': [...]}, {'namedtuple': name, 'fields': [[field, node], ...]}, {'none': true},
# {'scalar': value} (Python bool, int, float, str) and {'array': key, 'shape': [...],
# 'dtype': str} (stored in arrays.npz under key).


def _describe(value, where: str, arrays: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """The JSON node of `value`; its arrays are added to `arrays` under fresh keys."""
  if value is None:
    return {'none': True}
  if isinstance(value, _SCALARS):
    return {'scalar': value}
  if isinstance(value, (np.ndarray, np.generic)):
    key = f'a{len(arrays)}'
    arrays[key] = np.asarray(value)
    return {'array': key, 'shape': list(value.shape), 'dtype': value.dtype.str}
  if isinstance(value, tuple) and hasattr(value, '_fields'):
    return {'namedtuple': type(value).__name__,
            'fields': [[field, _describe(getattr(value, field), f'{where}.{field}', arrays)]
                       for field in value._fields]}
  if isinstance(value, (tuple, list)):
    kind = 'tuple' if isinstance(value, tuple) else 'list'
    return {kind: [_describe(v, f'{where}[{i}]', arrays) for i, v in enumerate(value)]}
  if isinstance(value, Mapping):
    if not all(isinstance(key, str) for key in value):
      raise CheckpointError(f'{where}: only string keys can be checkpointed')
    return {'dict': [[key, _describe(v, f'{where}[{key!r}]', arrays)]
                     for key, v in value.items()]}
  raise CheckpointError(f'{where}: cannot checkpoint a {type(value).__name__}')


def _children(node: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
  for kind in ('dict', 'fields'):
    if kind in node:
      return [(f'[{key!r}]' if kind == 'dict' else f'.{key}', child)
              for key, child in node[kind]]
  for kind in ('list', 'tuple'):
    if kind in node:
      return [(f'[{i}]', child) for i, child in enumerate(node[kind])]
  return []


def _check_arrays(node: Dict[str, Any], arrays: Mapping[str, np.ndarray],
                  where: str) -> None:
  """CorruptCheckpointError unless every array node has its array, shape and dtype."""
  if 'array' in node:
    array = arrays.get(node['array'])
    if (array is None or list(array.shape) != node['shape'] or
        array.dtype.str != node['dtype']):
      raise CorruptCheckpointError(f'{where}: array missing or not as the manifest says')
  for suffix, child in _children(node):
    _check_arrays(child, arrays, where + suffix)


def _rebuild(node: Dict[str, Any], arrays: Mapping[str, np.ndarray], template,
             where: str):
  """The state `node` describes, with the classes of `template` (the live state).

  A template without leaves (e.g. a fresh counter's empty dicts) takes the checkpoint's
  structure as it is; otherwise structure, shapes and dtypes must match the template.
  """
  if not jax.tree_util.tree_leaves(template):
    return _plain(node, arrays, where)
  return _match(node, arrays, template, where)


def _mismatch(where: str, found: str, expected: str) -> CheckpointError:
  return CheckpointError(f'{where}: the checkpoint holds {found} where this code has '
                         f'{expected}; it was written by an incompatible version')


def _node_kind(node: Dict[str, Any]) -> str:
  kind = next((k for k in ('none', 'scalar', 'array', 'namedtuple', 'list', 'tuple',
                           'dict') if k in node), 'node of unknown kind')
  return f'a {node["namedtuple"]}' if kind == 'namedtuple' else f'a {kind}'


def _match(node: Dict[str, Any], arrays: Mapping[str, np.ndarray], template,
           where: str):
  if template is None:
    if 'none' not in node:
      raise _mismatch(where, _node_kind(node), 'None')
    return None
  if isinstance(template, _SCALARS):
    if 'scalar' not in node or not _same_scalar_kind(node['scalar'], template):
      raise _mismatch(where, _node_kind(node), f'a {type(template).__name__}')
    return node['scalar']
  if isinstance(template, (np.ndarray, np.generic)):
    if 'array' not in node:
      raise _mismatch(where, _node_kind(node), 'an array')
    array = arrays[node['array']]
    if array.shape != template.shape or array.dtype != template.dtype:
      raise _mismatch(where, f'a {array.dtype}{list(array.shape)} array',
                      f'a {template.dtype}{list(template.shape)} array')
    return array
  if isinstance(template, tuple) and hasattr(template, '_fields'):
    fields = [field for field, _ in node.get('fields', ())]
    if node.get('namedtuple') != type(template).__name__ or fields != list(
        template._fields):
      raise _mismatch(where, f'{_node_kind(node)} {fields}',
                      f'a {type(template).__name__} {list(template._fields)}')
    return type(template)(*[
        _match(child, arrays, getattr(template, field), f'{where}.{field}')
        for field, child in node['fields']])
  if isinstance(template, (tuple, list)):
    kind = 'tuple' if isinstance(template, tuple) else 'list'
    if kind not in node or len(node[kind]) != len(template):
      raise _mismatch(where, _node_kind(node), f'a {kind} of {len(template)}')
    return type(template)(_match(child, arrays, t, f'{where}[{i}]')
                          for i, (child, t) in enumerate(zip(node[kind], template)))
  if isinstance(template, Mapping):
    keys = [key for key, _ in node.get('dict', ())]
    if 'dict' not in node or set(keys) != set(template):
      raise _mismatch(where, f'{_node_kind(node)} with keys {sorted(keys)}',
                      f'keys {sorted(template)}')
    return type(template)(
        (key, _match(child, arrays, template[key], f'{where}[{key!r}]'))
        for key, child in node['dict'])
  raise _mismatch(where, _node_kind(node), f'a {type(template).__name__}')


def _same_scalar_kind(value, template) -> bool:
  """Same type, or both numbers (a count may be saved as 3 and restored into 0.0)."""
  numbers = (int, float)
  return type(value) is type(template) or (
      type(value) in numbers and type(template) in numbers)


def _plain(node: Dict[str, Any], arrays: Mapping[str, np.ndarray], where: str):
  """The state `node` describes, in plain containers (no template to take classes from)."""
  if 'none' in node:
    return None
  if 'scalar' in node:
    return node['scalar']
  if 'array' in node:
    return arrays[node['array']]
  if 'dict' in node:
    return {key: _plain(child, arrays, f'{where}[{key!r}]') for key, child in node['dict']}
  if 'list' in node or 'tuple' in node:
    kind = 'list' if 'list' in node else 'tuple'
    children = [_plain(c, arrays, f'{where}[{i}]') for i, c in enumerate(node[kind])]
    return children if kind == 'list' else tuple(children)
  raise CheckpointError(f'{where}: holds {_node_kind(node)}, which this object does '
                        'not have')


def newest_fingerprint(directory: str) -> Optional[Mapping[str, str]]:
  """The fingerprint of the newest checkpoint in `directory` (None: no checkpoint)."""
  found = newest_usable(directory)
  return found[1]['fingerprint'] if found is not None else None


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
