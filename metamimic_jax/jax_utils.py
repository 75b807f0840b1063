"""Small modern JAX glue replacing Acme 0.4.0's (broken on current JAX) helpers.

It imports no Acme, so the portable core's tests can use it too.
"""

import collections
import queue
import threading
from typing import Iterator, List, Optional, Sequence, TypeVar

import jax
import numpy as np

T = TypeVar('T')


def put_sharded(tree: T, devices: Sequence[jax.Device]) -> T:
  """Puts leaves [D, ...] on the D `devices`, slice i on device i (what pmap takes).

  jax.device_put_sharded's replacement (removed in JAX 0.12; this works on 0.6 too).
  """
  mesh = jax.sharding.Mesh(np.asarray(list(devices)), ('devices',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('devices'))
  return jax.device_put(tree, sharding)


def replicate(tree: T, devices: Sequence[jax.Device]) -> T:
  """Copies `tree` to every device, stacked on a new leading axis."""
  devices = list(devices)
  stacked = jax.tree.map(
      lambda x: np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)), tree)
  return put_sharded(stacked, devices)


def get_from_first_device(tree: T) -> T:
  """The first replica of a replicated tree, as numpy arrays on the host.

  Copies the first local shard as it is: indexing (`x[0]`) would run a computation,
  which in a multi-host job hangs on arrays placed by `put_sharded`.
  """
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0, ...], tree)


def shard(batch: T, num_shards: int, steps: int = 1) -> T:
  """Reshapes each leaf's leading axis [B, ...] to [num_shards, B // num_shards, ...],
  or with `steps` > 1 to [num_shards, steps, B // (num_shards * steps), ...]."""
  def _reshape(x):
    if x.shape[0] % (num_shards * steps):
      raise ValueError(f'batch size {x.shape[0]} is not divisible by the '
                       f'{num_shards} devices x {steps} steps per call')
    lead = (num_shards,) if steps == 1 else (num_shards, steps)
    return x.reshape(lead + (x.shape[0] // (num_shards * steps),) + x.shape[1:])
  return jax.tree.map(_reshape, batch)


def sharded_prefetch(iterator: Iterator[T], devices: Sequence[jax.Device],
                     buffer_size: int = 2, steps: int = 1) -> Iterator[T]:
  """Moves host batches onto `devices`, split along the batch (and into `steps`
  batches per device call, see `shard`), in a background thread."""
  devices = list(devices)
  buffer = queue.Queue(maxsize=buffer_size)
  end = object()

  def _producer():
    try:
      for batch in iterator:
        buffer.put(put_sharded(shard(batch, len(devices), steps), devices))
    except Exception as e:  # pylint: disable=broad-except  # Re-raised by the consumer.
      buffer.put(e)
    buffer.put(end)

  threading.Thread(target=_producer, daemon=True).start()
  while True:
    try:  # Wake up regularly, so a stop request (an async exception) gets through.
      item = buffer.get(timeout=1.0)
    except queue.Empty:
      continue
    if item is end:
      return
    if isinstance(item, Exception):
      raise item
    yield item


class VariableClient:
  """Keeps a copy of a VariableSource's variables, refreshed every `update_period` calls.

  The source is anything with `get_variables(names)`, such as an Acme VariableSource.

  The copy lives on the default device: it moves there once per update, not with every
  call that reads it. With `asynchronous=True` the fetch runs in a background thread
  (use it for remote sources such as a Courier learner), so acting never waits on the
  network.
  """

  def __init__(self, source, names: Sequence[str],
               update_period: int = 1, asynchronous: bool = False):
    self._source = source
    self._names = list(names)
    self._update_period = update_period
    self._calls = 0
    self._asynchronous = asynchronous
    self._pending: Optional[threading.Thread] = None
    self._fetched: collections.deque = collections.deque(maxlen=1)
    self._params: Optional[List[object]] = None

  def update(self, wait: bool = False) -> None:
    self._calls += 1
    if self._params is not None and self._calls % self._update_period and not wait:
      return
    if wait or not self._asynchronous or self._params is None:
      self._params = jax.device_put(self._source.get_variables(self._names))
      return
    if self._fetched:
      self._params = jax.device_put(self._fetched.pop())
    if self._pending is None or not self._pending.is_alive():
      self._pending = threading.Thread(
          target=lambda: self._fetched.append(self._source.get_variables(self._names)),
          daemon=True)
      self._pending.start()

  @property
  def params(self) -> List[object]:
    if self._params is None:
      self.update(wait=True)
    return self._params
