"""A lean n-step transition adder: Acme's items, a fraction of its per-step Python work.

It writes exactly the items of `acme.adders.reverb.NStepTransitionAdder` (same table
signature, same transitions, in the same order; tests/test_adders.py compares them) but
keeps the n-step window itself instead of reading it back from the writer:

  - one writer column per leaf, flattened once per step with dm-tree's C flatten; with
    an `ObservationPacker` the observation is written packed (features, *images), so
    the writer and the learner's dataset handle a few leaves instead of dozens;
  - rewards and discounts stay in a Python window of the last n steps, and the n-step
    return is accumulated with Acme's float32 recurrence over flat per-key values;
  - the writer receives only what items reference: observations, actions, and each
    item's n-step return and discount (not the raw rewards, discounts and
    start-of-episode flags Acme also appends), in one append a step;
  - it waits on the server only when `max_in_flight_items` items are pending (Acme
    forces every item out as soon as it is written, so chunks hold a step or two);
  - it appends and creates items through the C++ writer under Reverb's Python
    `TrajectoryWriter`, with its own row references: the Python layer flattens with
    paths and wraps every reference in column objects on each call, which cost more
    than everything else the adder does. `_CppWriter` is the one place that reaches
    into Reverb's private API (pinned at 0.7).
"""

import collections
from typing import Deque, List, Optional, Tuple

from acme import adders
from acme import specs
from acme import types
from acme.adders.reverb import NStepTransitionAdder as AcmeNStepTransitionAdder
import dm_env
import numpy as np
import reverb
import tree

from metamimic_jax import packing

# Items get uniform priority, as Acme's adders without a priority function.
_PRIORITY = 1.0
# Items pending before the writer waits on the server: below the 50 at which Reverb's
# writer logs that the number of pending items is "alarmingly high".
MAX_IN_FLIGHT_ITEMS = 40
# Acme's wait for the table signature: a distributed replay may take a while to start.
_SIGNATURE_TIMEOUT_MS = 300_000


class NStepTransitionAdder(adders.Adder):
  """Writes n-step transitions (s_t, a_t, R_t:t+n, D_t:t+n, s_t+n) to one Reverb table.

  R and D follow Acme: R = r_t + g d_t r_t+1 + ... + g^(m-1) d_t..d_t+m-2 r_t+m-1 and
  D = g^(m-1) d_t..d_t+m-1, per reward key (a scalar discount applies to every key),
  with m = n except for the shorter transitions at an episode's start and end.
  Writer rows: row t holds o_t, a_t-1 and the return and discount of the item written
  when o_t arrives (row 0 only o_0); the episode's shorter final items put theirs in
  rows after the last observation's.
  """

  def __init__(self, client: reverb.Client, table: str, n_step: int, discount: float,
               max_in_flight_items: int = MAX_IN_FLIGHT_ITEMS,
               packer: Optional[packing.ObservationPacker] = None):
    if n_step < 1:
      raise ValueError(f'n_step must be >= 1, got {n_step}')
    self._client = client
    self._table = table
    self._n_step = n_step
    self._discount = np.float32(discount)
    self._max_in_flight_items = max_in_flight_items
    self._flatten_observation = (tree.flatten if packer is None
                                 else lambda o: list(packer.pack(o)))
    self._writer: Optional[_CppWriter] = None
    # The last n steps' flat rewards and discounts (one discount per reward leaf).
    self._window: Deque[Tuple[List[np.ndarray], List[np.ndarray]]] = (
        collections.deque(maxlen=n_step))
    self._num_steps = -1  # Steps added this episode; -1 before add_first.

  @classmethod
  def signature(cls, environment_spec: specs.EnvironmentSpec,
                packer: Optional[packing.ObservationPacker] = None):
    """The table signature: Acme's NStepTransitionAdder's (with packed observations)."""
    if packer is not None:
      environment_spec = environment_spec._replace(observations=packer.spec)
    return AcmeNStepTransitionAdder.signature(environment_spec)

  def add_first(self, timestep: dm_env.TimeStep) -> None:
    if not timestep.first():
      raise ValueError('adder.add_first needs a first timestep (timestep.first())')
    if self._writer is None:
      # An item reaches back n rows for its state; 2n leaves the chunker room.
      self._writer = _CppWriter(self._client.trajectory_writer(
          num_keep_alive_refs=2 * self._n_step,
          get_signature_timeout_ms=_SIGNATURE_TIMEOUT_MS))
    self._window.clear()
    self._num_steps = 0
    self._writer.append(self._flatten_observation(timestep.observation))

  def add(self, action: types.NestedArray, next_timestep: dm_env.TimeStep,
          extras: types.NestedArray = ()) -> None:
    if self._num_steps < 0:
      raise ValueError('adder.add_first must be called before adder.add')
    if extras:
      raise ValueError('this adder writes no extras')
    self._window.append(_flat_reward_and_discount(next_timestep))
    self._num_steps += 1
    first = max(0, self._num_steps - self._n_step)
    n_step_return, total_discount = self._accumulate(first)
    self._writer.append(self._flatten_observation(next_timestep.observation),
                        tree.flatten(action), n_step_return + total_discount)
    self._create_item(first, self._num_steps, self._num_steps)
    if next_timestep.last():
      self._write_last(first)
      self.reset()

  def reset(self) -> None:
    if self._writer is not None:
      self._writer.end_episode()
    self._window.clear()
    self._num_steps = -1

  def _write_last(self, first: int) -> None:
    """The shorter transitions from each later state to the last observation."""
    last = self._num_steps
    for row, start in enumerate(range(first + 1, last), start=last + 1):
      n_step_return, total_discount = self._accumulate(start)
      self._writer.append(None, None, n_step_return + total_discount)
      self._create_item(start, row, last)

  def _accumulate(self, first: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Acme's float32 recurrence for the return and discount of steps first..now."""
    steps = list(self._window)[first - (self._num_steps - len(self._window)):]
    n_step_return, total_discount = (list(x) for x in steps[0])
    for rewards, discounts in steps[1:]:
      for i, (reward, discount) in enumerate(zip(rewards, discounts)):
        total_discount[i] = total_discount[i] * self._discount
        n_step_return[i] = n_step_return[i] + reward * total_discount[i]
        total_discount[i] = total_discount[i] * discount
    return n_step_return, total_discount

  def _create_item(self, first: int, return_row: int, last: int) -> None:
    """Inserts (o_first, a_first, R, D, o_last), flat in the signature's order."""
    self._writer.create_item(self._table, _PRIORITY, first, return_row, last)
    self._writer.flush(self._max_in_flight_items)


class _CppWriter:
  """Appends rows and creates items with Reverb's C++ trajectory writer directly.

  A row is (observation leaves, action leaves, returns and discounts); the first row of
  an episode has only the observation, the rows after the last observation only the
  returns and discounts. Missing parts are None, as Reverb's Python writer sends them.
  """

  def __init__(self, writer: reverb.TrajectoryWriter):
    self._writer = writer
    self._cpp = writer._writer  # pylint: disable=protected-access
    self._sizes: Optional[Tuple[int, int, int]] = None  # Leaves per part.
    self._rows: List[list] = []  # This episode's rows of data references.

  def append(self, observation: Optional[list], action: Optional[list] = None,
             returns_and_discounts: Optional[list] = None) -> None:
    parts = (observation, action, returns_and_discounts)
    if self._sizes is None and None not in parts:
      self._sizes = tuple(len(part) for part in parts)
    if self._sizes is None:  # The first row: the other columns do not exist yet.
      row = list(observation)
    else:
      row = []
      for part, size in zip(parts, self._sizes):
        row += [None] * size if part is None else part
    self._rows.append(self._cpp.Append(row))

  def create_item(self, table: str, priority: float, first: int, return_row: int,
                  last: int) -> None:
    num_observation, num_action, _ = self._sizes
    state, returns = self._rows[first], self._rows[return_row]
    references = (state[:num_observation] +
                  self._rows[first + 1][num_observation:num_observation + num_action] +
                  returns[num_observation + num_action:] +
                  self._rows[last][:num_observation])
    self._cpp.CreateItem(table, priority, [[r] for r in references],
                         [True] * len(references))

  def flush(self, block_until_num_items: int) -> None:
    self._writer.flush(block_until_num_items)

  def end_episode(self) -> None:
    self._writer.end_episode(clear_buffers=True)
    self._rows = []


def _flat_reward_and_discount(timestep: dm_env.TimeStep
                              ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
  """Flat rewards, and one discount per reward (a scalar discount is shared)."""
  rewards = tree.flatten(timestep.reward)
  discounts = tree.flatten(timestep.discount)
  if len(discounts) == 1:
    discounts = discounts * len(rewards)
  elif len(discounts) != len(rewards):
    raise ValueError(f'the discount {timestep.discount} must be a scalar or have the '
                     f'structure of the reward {timestep.reward}')
  return ([np.asarray(r) for r in rewards], [np.asarray(d) for d in discounts])
