"""MetaMimicLearner: Acme's Learner around the pure sgd_step of `learning.py`."""

import time
from typing import Iterator, List, Optional, Sequence

import acme
from acme import types
from acme.utils import counting
from acme.utils import loggers
import jax
import optax

from metamimic_jax import jax_utils
from metamimic_jax import learning
from metamimic_jax import multihost
from metamimic_jax import numerics
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.networks import MetaMimicNetworks


class MetaMimicLearner(acme.Learner):
  """Runs the pmapped sgd_step on batches from a sharded, device-prefetched iterator.

  With `config.sgd_steps_per_call` K > 1 each item holds K batches per device and one
  `step()` runs K SGD steps (lax.scan) and counts K.

  Multi-host (`num_processes` > 1, after `multihost.initialize`): every process runs
  one learner on its share of each batch (its iterator yields batch_size /
  num_processes per item), the step's pmean spans every process's devices, and the
  first step after construction or `restore` starts every process from process 0's
  state. Only process 0 counts and logs; every process must call `step` and `restore`
  alike.
  """

  # Names under which `get_variables` serves the policies.
  IMITATION_POLICY = 'imitation_policy'
  TASK_POLICY = 'task_policy'

  def __init__(self,
               networks: MetaMimicNetworks,
               random_key: jax.Array,
               iterator: Iterator[types.Transition],
               dummy_observation,
               dummy_action,
               config: MetaMimicConfig,
               devices: Optional[Sequence[jax.Device]] = None,
               counter: Optional[counting.Counter] = None,
               logger: Optional[loggers.Logger] = None,
               log_every_seconds: float = 10.0,
               task_only: bool = False,
               process_id: int = 0,
               num_processes: int = 1):
    if (process_id, num_processes) != (jax.process_index(), jax.process_count()):
      raise ValueError(f'learner process {process_id} of {num_processes}, but JAX runs '
                       f'process {jax.process_index()} of {jax.process_count()} '
                       '(multihost.initialize joins the job)')
    self._devices = list(devices or jax.local_devices())
    step_devices = multihost.pmap_devices(self._devices)
    multihost.process_batch_size(config.batch_size, step_devices)  # Checks it divides.
    self._is_chief = process_id == 0
    self._multihost = num_processes > 1
    self._synced = not self._multihost
    self._iterator = iterator
    self._counter = counter or counting.Counter()
    self._logger = logger or loggers.make_default_logger('learner', save_data=False)
    self._log_every_seconds = log_every_seconds
    self._last_log = 0.0
    state = learning.init_training_state(random_key, networks, dummy_observation,
                                         dummy_action, config, task_only)
    self._state = jax_utils.replicate(state, self._devices)
    # No buffer donation: get_variables may read the previous state from another
    # (Courier) thread while a step runs.
    sgd_step = learning.make_sgd_step(networks, config, axis_name='devices')
    self._steps_per_call = config.sgd_steps_per_call
    if self._steps_per_call > 1:
      sgd_step = learning.scan_sgd_steps(sgd_step)
    self._sgd_step = jax.pmap(
        numerics.with_finite_flag(sgd_step, learning.online_parameters),
        axis_name='devices', devices=step_devices)
    self._timestamp = None

  def step(self) -> None:
    """One call (K steps); NonFiniteError (the state left as it was) if not finite."""
    if not self._synced:
      self._state = jax_utils.replicate(multihost.broadcast_from_process_0(
          jax_utils.get_from_first_device(self._state)), self._devices)
      self._synced = True
    transitions = next(self._iterator)
    state, metrics, finite = self._sgd_step(self._state, transitions)
    numerics.check(finite, lambda: int(jax_utils.get_from_first_device(state.steps)),
                   metrics, learning.online_parameters(state))  # Raises NonFiniteError.
    self._state = state
    if not self._is_chief:
      return
    now = time.time()
    elapsed = 0.0 if self._timestamp is None else now - self._timestamp
    self._timestamp = now
    counts = self._counter.increment(steps=self._steps_per_call, walltime=elapsed)
    if now - self._last_log >= self._log_every_seconds:
      self._last_log = now
      self._logger.write({**jax_utils.get_from_first_device(metrics), **counts})

  def get_variables(self, names: Sequence[str]) -> List[optax.Params]:
    state = self._state
    variables = {
        self.IMITATION_POLICY: lambda: state.imitation.policy_params,
        self.TASK_POLICY: lambda: state.task.policy_params,
    }
    return [jax_utils.get_from_first_device(variables[name]()) for name in names]

  def save(self) -> learning.TrainingState:
    return jax_utils.get_from_first_device(self._state)

  def restore(self, state: learning.TrainingState) -> None:
    """Restores `state`. With several processes every process must call it alike;
    process 0's state reaches all at the next step, so the others may pass any state
    of the same structure (their own `save()`): only process 0 reads checkpoints."""
    self._state = jax_utils.replicate(state, self._devices)
    self._synced = not self._multihost
