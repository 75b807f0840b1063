"""Demonstrations on disk: a versioned HDF5 layout, validated before anything is returned.

Layout (format version 1)::

  /                       attrs: format='metamimic-demonstrations', version=1, domain
  /demo_00000/            attrs: seed
    observations/<key>    [T, ...] one array per observation key (float32, or uint8 pixels)
    initial_state/<name>  arrays that restore the simulator to frame 0 (physics state, ...)
    task_rewards          [T - 1] float32, the task reward after each demonstrator step

A demonstration holds observations only: the demonstrator's actions are never stored, so
no agent can see them.
"""

import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

FORMAT_NAME = 'metamimic-demonstrations'
FORMAT_VERSION = 1
_ALLOWED_DTYPES = (np.float32, np.uint8)


class DemonstrationError(ValueError):
  """A demonstration file that cannot be used; the message names the file and problem."""


@dataclasses.dataclass(frozen=True)
class Demonstration:
  observations: Dict[str, np.ndarray]  # key -> [T, ...]
  initial_state: Dict[str, np.ndarray]  # What the domain needs to restore frame 0.
  task_rewards: np.ndarray  # [T - 1]
  seed: int = -1

  @property
  def length(self) -> int:
    return len(self.task_rewards) + 1


def save(path: str, demos: Sequence[Demonstration], domain: str) -> None:
  """Writes demos atomically (a partial file never appears under `path`)."""
  if not demos:
    raise DemonstrationError(f'{path}: refusing to write an empty demonstration set')
  for i, demo in enumerate(demos):
    _validate_demo(demo, f'{path}: demo {i}')
  tmp_path = f'{path}.tmp{os.getpid()}'
  try:
    _write(tmp_path, demos, domain)
    os.replace(tmp_path, path)
  except OSError as e:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise OSError(f'{path}: could not write the demonstrations ({e})') from e


def _write(path: str, demos: Sequence[Demonstration], domain: str) -> None:
  with h5py.File(path, 'w') as f:
    f.attrs['format'] = FORMAT_NAME
    f.attrs['version'] = FORMAT_VERSION
    f.attrs['domain'] = domain
    for i, demo in enumerate(demos):
      group = f.create_group(f'demo_{i:05d}')
      group.attrs['seed'] = demo.seed
      for name, arrays in (('observations', demo.observations),
                           ('initial_state', demo.initial_state)):
        sub = group.create_group(name)
        for key, value in arrays.items():
          sub.create_dataset(key, data=value)
      group.create_dataset('task_rewards', data=demo.task_rewards)


def load(path: str,
         domain: Optional[str] = None,
         observation_shapes: Optional[Mapping[str, Tuple[int, ...]]] = None,
         ) -> List[Demonstration]:
  """Loads and validates every demo in `path`, or raises DemonstrationError.

  Args:
    path: an HDF5 file written by `save`.
    domain: if given, the domain the file must have been recorded in.
    observation_shapes: if given, the per-frame shape each observation key must have.
  """
  if not os.path.isfile(path):
    raise DemonstrationError(f'{path}: no such demonstration file')
  try:
    with h5py.File(path, 'r') as f:
      _check_header(f, path, domain)
      names = sorted(k for k in f.keys() if k.startswith('demo_'))
      if not names:
        raise DemonstrationError(f'{path}: holds no demonstrations')
      demos = [_read_demo(f[name], f'{path}: {name}') for name in names]
  except DemonstrationError:
    raise
  except (OSError, KeyError, ValueError, TypeError) as e:
    raise DemonstrationError(
        f'{path}: unreadable or truncated demonstration file ({e})') from e
  for name, demo in zip(names, demos):
    where = f'{path}: {name}'
    _validate_demo(demo, where)
  if observation_shapes is not None:
    check_shapes(demos, observation_shapes, path)
  return demos


def split(demos: Sequence[Demonstration], held_out_fraction: float,
          seed: int = 0) -> Tuple[List[Demonstration], List[Demonstration]]:
  """A seeded (train, held_out) split; both parts are non-empty."""
  if len(demos) < 2:
    raise DemonstrationError('need at least 2 demonstrations to split')
  order = np.random.default_rng(seed).permutation(len(demos))
  num_held_out = min(max(1, int(round(held_out_fraction * len(demos)))), len(demos) - 1)
  held_out = [demos[i] for i in order[:num_held_out]]
  train = [demos[i] for i in order[num_held_out:]]
  return train, held_out


def _check_header(f: h5py.File, path: str, domain: Optional[str]) -> None:
  if f.attrs.get('format') != FORMAT_NAME:
    raise DemonstrationError(f'{path}: not a {FORMAT_NAME} file')
  version = int(f.attrs.get('version', -1))
  if version != FORMAT_VERSION:
    raise DemonstrationError(
        f'{path}: format version {version}, this code reads version {FORMAT_VERSION}')
  file_domain = f.attrs.get('domain')
  if domain is not None and file_domain != domain:
    raise DemonstrationError(
        f'{path}: recorded in domain {file_domain!r}, expected {domain!r}')


def _read_demo(group: h5py.Group, where: str) -> Demonstration:
  for name in ('observations', 'initial_state', 'task_rewards'):
    if name not in group:
      raise DemonstrationError(f'{where}: missing {name!r}')
  return Demonstration(
      observations={k: np.asarray(v[()]) for k, v in group['observations'].items()},
      initial_state={k: np.asarray(v[()]) for k, v in group['initial_state'].items()},
      task_rewards=np.asarray(group['task_rewards'][()]),
      seed=int(group.attrs.get('seed', -1)))


def _validate_demo(demo: Demonstration, where: str) -> None:
  if not demo.observations:
    raise DemonstrationError(f'{where}: has no observations')
  if demo.task_rewards.ndim != 1 or demo.task_rewards.dtype != np.float32:
    raise DemonstrationError(
        f'{where}: task_rewards must be a float32 vector, got '
        f'{demo.task_rewards.dtype} of shape {demo.task_rewards.shape}')
  length = demo.length
  if length < 2:
    raise DemonstrationError(f'{where}: needs at least 2 frames, has {length}')
  arrays = [('observations/' + k, v) for k, v in demo.observations.items()]
  arrays += [('initial_state/' + k, v) for k, v in demo.initial_state.items()]
  arrays.append(('task_rewards', demo.task_rewards))
  for key, value in arrays:
    if value.dtype not in _ALLOWED_DTYPES and not key.startswith('initial_state/'):
      raise DemonstrationError(
          f'{where}: {key} has dtype {value.dtype}, expected float32 (or uint8 pixels)')
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      raise DemonstrationError(f'{where}: {key} holds NaN or infinite values')
  for key, value in demo.observations.items():
    if value.ndim < 1 or value.shape[0] != length:
      raise DemonstrationError(
          f'{where}: observations/{key} has shape {value.shape}, expected {length} '
          'frames (one more than task_rewards)')


def check_shapes(demos: Sequence[Demonstration],
                 shapes: Mapping[str, Tuple[int, ...]], source: str) -> None:
  """Raises DemonstrationError unless every demo has every key at its frame shape."""
  for i, demo in enumerate(demos):
    missing = sorted(set(shapes) - set(demo.observations))
    if missing:
      raise DemonstrationError(f'{source}: demo {i} lacks observation keys {missing}')
    for key, shape in shapes.items():
      got = demo.observations[key].shape[1:]
      if tuple(got) != tuple(shape):
        raise DemonstrationError(
            f'{source}: demo {i} observations/{key} frames have shape {got}, the '
            f'environment gives {tuple(shape)}')
