"""Multi-host data parallelism: one learner process per host, one global batch.

Every process samples its own share of the batch, splits it over its local devices and
pmaps the step over ALL the job's devices (`pmap_devices`), so the step's pmean averages
the gradients of every host. Part of the portable core: it imports jax and numpy only.
"""

import dataclasses
from typing import List, Optional, Sequence, TypeVar

import jax
from jax.experimental import multihost_utils
import numpy as np

T = TypeVar('T')


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
  """This learner process's place in a multi-host job; the defaults: a single host."""
  coordinator_address: Optional[str] = None  # 'host:port' of process 0; the same on all.
  num_processes: int = 1
  process_id: int = 0
  initialization_timeout_s: int = 300  # How long process 0 waits for the others.

  def __post_init__(self):
    if self.num_processes < 1:
      raise ValueError(f'num_processes must be >= 1, got {self.num_processes}')
    if not 0 <= self.process_id < self.num_processes:
      raise ValueError(f'process_id {self.process_id} is out of range for '
                       f'{self.num_processes} processes (0 to {self.num_processes - 1})')
    if self.num_processes > 1 and not self.coordinator_address:
      raise ValueError(f'{self.num_processes} processes need a coordinator_address '
                       '(host:port of process 0)')
    if self.coordinator_address:
      host, _, port = self.coordinator_address.rpartition(':')
      if not host or not port.isdigit():
        raise ValueError(f'coordinator_address must be host:port, got '
                         f'{self.coordinator_address!r}')

  @property
  def is_multihost(self) -> bool:
    return self.num_processes > 1


def initialize(settings: ProcessSettings) -> None:
  """Joins the job (jax.distributed.initialize; nothing for a single host), then checks
  that every process was given the same num_processes and its own process_id.

  Call it before anything else uses JAX. Raises ValueError naming the values that
  disagree (every process raises it). A coordinator given a larger num_processes than
  processes come waits `initialization_timeout_s`, then JAX ends the processes.
  """
  if not settings.is_multihost:
    return
  jax.distributed.initialize(
      coordinator_address=settings.coordinator_address,
      num_processes=settings.num_processes, process_id=settings.process_id,
      initialization_timeout=settings.initialization_timeout_s)
  given = multihost_utils.process_allgather(
      np.array([settings.num_processes, settings.process_id], np.int32))
  counts, ids = given[:, 0].tolist(), given[:, 1].tolist()
  if set(counts) != {jax.process_count()} or ids != list(range(jax.process_count())):
    raise ValueError(
        f'the {jax.process_count()} processes of the job at '
        f'{settings.coordinator_address} were given num_processes {counts} and '
        f'process_id {ids} (by process): give every process the same num_processes and '
        'each its own process_id')


def process_batch_size(batch_size: int, devices: Sequence[jax.Device]) -> int:
  """This process's share of the global `batch_size`, which the step's `devices` (see
  `pmap_devices`) share: its devices' part; ValueError unless every device gets the
  same number."""
  if batch_size % len(devices):
    processes = jax.process_count()
    raise ValueError(f'batch_size {batch_size} must be divisible by the {len(devices)} '
                     'devices that share it' +
                     (f' ({processes} learner processes)' if processes > 1 else ''))
  local = sum(device.process_index == jax.process_index() for device in devices)
  return batch_size // len(devices) * local


def pmap_devices(local_devices: Sequence[jax.Device]) -> Sequence[jax.Device]:
  """The devices to pmap over: with several processes, ALL the job's devices (pmap
  given only the local ones would reduce over those alone), else `local_devices`."""
  if jax.process_count() == 1:
    return list(local_devices)
  if set(local_devices) != set(jax.local_devices()):
    raise ValueError('a multi-host learner uses all its local devices, got '
                     f'{len(local_devices)} of {jax.local_device_count()}')
  return jax.devices()


def broadcast_from_process_0(tree: T) -> T:
  """Process 0's `tree` (numpy arrays) on every process; every process must call it.

  This is how every host starts from process 0's state: its initial parameters and the
  checkpoint only process 0 reads.
  """
  if jax.process_count() == 1:
    return tree
  return jax.device_get(multihost_utils.broadcast_one_to_all(tree))



def flagged_processes(flag: bool) -> List[int]:
  """The ids of the processes that passed `flag` True; every process must call it.

  Lets every process of a job stop together: when one cannot start, or when one is asked
  to stop (a process that left alone would leave the others waiting in a collective).
  """
  if jax.process_count() == 1:
    return [0] if flag else []
  flags = multihost_utils.process_allgather(np.array(flag, np.int32))
  return [i for i, value in enumerate(np.ravel(flags).tolist()) if value]
