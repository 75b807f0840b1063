"""A lean n-step transition adder: Acme's items, a fraction of its per-step Python work.

It writes the transitions of `acme.adders.reverb.NStepTransitionAdder` (the same
transitions, in the same order; tests/test_adders.py compares them) but keeps the
n-step window itself instead of reading it back from the writer, and stores each step
as one float32 vector plus the observation's images (`TransitionLayout`): Reverb's
writer and the learner's dataset pay per column, so a row of one vector and an item of
four cost a fraction of one column per leaf.

  - the returns and discounts of the (at most n) transitions still open are kept as
    float32 arrays [open, reward keys] and advanced together with each step by Acme's
    float32 recurrence (the same operations in the same order, elementwise);
  - one append a step, holding only what items reference;
  - items are created in groups of `items_per_write` (and at an episode's end), then
    the writer waits until at most `max_in_flight_items` are unconfirmed. Acme creates
    and sends every item as soon as its last step arrives, so every step wakes the
    writer's and the server's threads; in the acting loop that cost ~6x the writing
    itself (WORKSPACE_NOTES.md, "Acting loop speed"). Items reach the table up to a
    group later, in the same order;
  - it appends and creates items through the C++ writer under Reverb's Python
    `TrajectoryWriter`, with its own row references: the Python layer flattens with
    paths and wraps every reference in column objects on each call, which cost more
    than everything else the adder does. `_CppWriter` is the one place that reaches
    into Reverb's private API (pinned at 0.7).
"""

from typing import List, NamedTuple, Optional, Tuple

from acme import adders
from acme import specs
from acme import types
from acme.adders.reverb import NStepTransitionAdder as AcmeNStepTransitionAdder
import dm_env
import jax
import numpy as np
import reverb
import tensorflow as tf
import tree

from metamimic_jax import packing

# Items get uniform priority, as Acme's adders without a priority function.
_PRIORITY = 1.0
# Items created at once, and items left unconfirmed before the next group: with an
# episode's n - 1 last items (n <= 10) below the 50 pending items at which Reverb's
# writer logs that their number is "alarmingly high".
ITEMS_PER_WRITE = 32
MAX_IN_FLIGHT_ITEMS = 8
# Acme's wait for the table signature: a distributed replay may take a while to start.
_SIGNATURE_TIMEOUT_MS = 300_000
# How replay stores transitions: 2 is `TransitionLayout` (session 5). Replay checkpoints
# of an older layout cannot be resumed by this code.
LAYOUT_VERSION = 2
_NO_ROWS = np.zeros((0, 0), np.float32)  # No open transitions.


class StoredTransition(NamedTuple):
  """A replay item: the rows an n-step transition reads, as `TransitionLayout` stores them.

  `observation` and `next_observation` are packed observations (step vector, *images);
  the action is read from `action_step`'s vector, the return and discount from
  `return_step`'s.
  """
  observation: packing.Packed
  action_step: np.ndarray
  return_step: np.ndarray
  next_observation: packing.Packed


class TransitionLayout:
  """How replay stores n-step transitions: a step is one float32 vector and the images.

  The vector is [observation features | action | returns | discounts] (one return and
  one discount per reward leaf); parts a row does not have are zeros. `unpack` turns
  stored items, batched or not, back into Acme's `Transition`, with the dtypes of
  Acme's n-step signature.
  """

  def __init__(self, environment_spec: specs.EnvironmentSpec):
    self.observation_packer = packing.ObservationPacker(environment_spec.observations)
    self._transition_spec = AcmeNStepTransitionAdder.signature(environment_spec)
    features = self.observation_packer.size
    self._action_shape = tuple(environment_spec.actions.shape)
    action_size = int(np.prod(self._action_shape))
    self._reward_treedef = jax.tree.structure(self._transition_spec.reward)
    num_rewards = self._reward_treedef.num_leaves
    self._features = slice(0, features)
    self._action = slice(features, features + action_size)
    self._returns = slice(self._action.stop, self._action.stop + num_rewards)
    self._discounts = slice(self._returns.stop, self._returns.stop + num_rewards)
    self.size = self._discounts.stop

  def signature(self) -> StoredTransition:
    step = tf.TensorSpec((self.size,), tf.float32)
    images = tuple(tf.TensorSpec(s.shape, tf.uint8)
                   for s in self.observation_packer.spec[1:])
    return StoredTransition((step, *images), step, step, (step, *images))

  def step_vector(self, features: Optional[np.ndarray], action: Optional[list],
                  returns_and_discounts: Optional[list]) -> np.ndarray:
    """One row's vector; None parts stay zero."""
    vector = np.zeros(self.size, np.float32)
    if features is not None:
      vector[self._features] = features
    if action is not None:
      vector[self._action] = np.ravel(action[0]) if len(action) == 1 else np.concatenate(
          [np.ravel(a) for a in action])
    if returns_and_discounts is not None:
      vector[self._returns.start:] = returns_and_discounts
    return vector

  def unpack(self, item: StoredTransition) -> types.Transition:
    spec = self._transition_spec
    unpack = self.observation_packer.unpack
    batch_shape = item.action_step.shape[:-1]

    def scalars(vector, part, specs_nest):
      return jax.tree.unflatten(self._reward_treedef, [
          vector[..., i].astype(s.dtype.as_numpy_dtype) for i, s in zip(
              range(part.start, part.stop), jax.tree.leaves(specs_nest))])

    observation, *images = item.observation
    next_observation, *next_images = item.next_observation
    return types.Transition(
        observation=unpack((observation[..., self._features], *images)),
        action=item.action_step[..., self._action].reshape(
            batch_shape + self._action_shape).astype(spec.action.dtype.as_numpy_dtype),
        reward=scalars(item.return_step, self._returns, spec.reward),
        discount=scalars(item.return_step, self._discounts, spec.discount),
        next_observation=unpack((next_observation[..., self._features], *next_images)),
        extras=())


class NStepTransitionAdder(adders.Adder):
  """Writes n-step transitions (s_t, a_t, R_t:t+n, D_t:t+n, s_t+n) to one Reverb table.

  R and D follow Acme: R = r_t + g d_t r_t+1 + ... + g^(m-1) d_t..d_t+m-2 r_t+m-1 and
  D = g^(m-1) d_t..d_t+m-1, per reward key (a scalar discount applies to every key),
  with m = n except for the shorter transitions at an episode's start and end.
  Writer rows: row t holds o_t, a_t-1 and the return and discount of the item written
  when o_t arrives (row 0 only o_0); the episode's shorter final items put theirs in
  rows after the last observation's. The table's signature is `layout.signature()`.

  A caller that has already packed an observation with `layout.observation_packer`
  (the actor, for its policy) passes it as `packed_observation` to skip packing again.
  """

  def __init__(self, client: reverb.Client, table: str, n_step: int, discount: float,
               layout: TransitionLayout, items_per_write: int = ITEMS_PER_WRITE,
               max_in_flight_items: int = MAX_IN_FLIGHT_ITEMS):
    if n_step < 1:
      raise ValueError(f'n_step must be >= 1, got {n_step}')
    if items_per_write < 1:
      raise ValueError(f'items_per_write must be >= 1, got {items_per_write}')
    self._client = client
    self._table = table
    self._n_step = n_step
    self._discount = np.float32(discount)
    self.layout = layout
    self._items_per_write = items_per_write
    self._max_in_flight_items = max_in_flight_items
    self._writer: Optional[_CppWriter] = None
    # The open transitions' returns and discounts so far, oldest first: row i is the
    # transition whose first reward is the (num_steps - open + 1 + i)-th of the episode.
    self._returns = self._discounts = _NO_ROWS
    self._num_steps = -1  # Steps added this episode; -1 before add_first.

  def add_first(self, timestep: dm_env.TimeStep,
                packed_observation: Optional[packing.Packed] = None) -> None:
    if not timestep.first():
      raise ValueError('adder.add_first needs a first timestep (timestep.first())')
    if self._writer is None:
      # A waiting item reaches back a group and n rows; n more leave the chunker room.
      self._writer = _CppWriter(self._client.trajectory_writer(
          num_keep_alive_refs=self._items_per_write + 2 * self._n_step,
          get_signature_timeout_ms=_SIGNATURE_TIMEOUT_MS))
    self._returns = self._discounts = _NO_ROWS
    self._num_steps = 0
    features, *images = self._pack(timestep.observation, packed_observation)
    self._writer.append(self.layout.step_vector(features, None, None), images)

  def add(self, action: types.NestedArray, next_timestep: dm_env.TimeStep,
          extras: types.NestedArray = (),
          packed_observation: Optional[packing.Packed] = None) -> None:
    if self._num_steps < 0:
      raise ValueError('adder.add_first must be called before adder.add')
    if extras:
      raise ValueError('this adder writes no extras')
    self._advance(*_flat_reward_and_discount(next_timestep))
    self._num_steps += 1
    first = max(0, self._num_steps - self._n_step)
    features, *images = self._pack(next_timestep.observation, packed_observation)
    self._writer.append(self.layout.step_vector(
        features, tree.flatten(action),
        np.concatenate([self._returns[0], self._discounts[0]])), images)
    self._writer.create_item(first, self._num_steps, self._num_steps)
    if next_timestep.last():
      self._write_last(first)
      self.reset()
    elif self._writer.num_waiting_items >= self._items_per_write:
      self._write_items()

  def reset(self) -> None:
    if self._writer is not None:
      self._write_items()
      self._writer.end_episode()
    self._returns = self._discounts = _NO_ROWS
    self._num_steps = -1

  def close(self) -> None:
    """Ends the stream to the server, whose stop() would wait ~5 s on an open one;
    items of the unfinished episode are dropped."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    self._returns = self._discounts = _NO_ROWS
    self._num_steps = -1

  def _pack(self, observation, packed: Optional[packing.Packed]) -> packing.Packed:
    return self.layout.observation_packer.pack(observation) if packed is None else packed

  def _write_last(self, first: int) -> None:
    """The shorter transitions from each later state to the last observation."""
    last = self._num_steps
    # The open transitions after the one written last start at first + 1, .., last - 1.
    for offset, (n_step_return, total_discount) in enumerate(
        zip(self._returns[1:], self._discounts[1:]), start=1):
      self._writer.append(self.layout.step_vector(
          None, None, np.concatenate([n_step_return, total_discount])), None)
      self._writer.create_item(first + offset, last + offset, last)

  def _advance(self, rewards: np.ndarray, discounts: np.ndarray) -> None:
    """Adds a step's rewards to the open transitions (Acme's float32 recurrence: D *= g;
    R += r D; D *= d), opens one that starts with them and keeps the last n."""
    if not len(self._returns):
      self._returns, self._discounts = rewards[None], discounts[None]
      return
    total_discounts = self._discounts * self._discount
    returns = self._returns + rewards * total_discounts
    total_discounts = total_discounts * discounts
    kept = slice(max(0, len(returns) - self._n_step + 1), None)
    self._returns = np.concatenate([returns[kept], rewards[None]])
    self._discounts = np.concatenate([total_discounts[kept], discounts[None]])

  def _write_items(self) -> None:
    self._writer.write_items(self._table, _PRIORITY)
    self._writer.flush(self._max_in_flight_items)


class _CppWriter:
  """Appends rows and creates items with Reverb's C++ trajectory writer directly.

  A row is (step vector, *images); the rows after the last observation have no images
  (None, as Reverb's Python writer sends a missing column). Items wait, as the rows
  they read, until `write_items`.
  """

  def __init__(self, writer: reverb.TrajectoryWriter):
    self._writer = writer
    self._cpp = writer._writer  # pylint: disable=protected-access
    self._num_images: Optional[int] = None
    self._rows: List[list] = []  # This episode's rows of data references.
    self._waiting_items: List[list] = []  # Each item's references, in signature order.

  def append(self, vector: np.ndarray, images: Optional[list]) -> None:
    if self._num_images is None:
      self._num_images = len(images)
    self._rows.append(self._cpp.Append(
        [vector] + ([None] * self._num_images if images is None else images)))

  @property
  def num_waiting_items(self) -> int:
    return len(self._waiting_items)

  def create_item(self, first: int, return_row: int, last: int) -> None:
    """Queues the `StoredTransition` of o_first, a_first, R, D and o_last."""
    state, end = self._rows[first], self._rows[last]
    self._waiting_items.append(
        state + [self._rows[first + 1][0], self._rows[return_row][0]] + end)

  def write_items(self, table: str, priority: float) -> None:
    for references in self._waiting_items:
      self._cpp.CreateItem(table, priority, [[r] for r in references],
                           [True] * len(references))
    self._waiting_items = []

  def flush(self, block_until_num_items: int) -> None:
    self._writer.flush(block_until_num_items)

  def end_episode(self) -> None:
    self._writer.end_episode(clear_buffers=True)
    self._rows = []

  def close(self) -> None:
    self._writer.close()


def _flat_reward_and_discount(timestep: dm_env.TimeStep
                              ) -> Tuple[np.ndarray, np.ndarray]:
  """Flat float32 rewards, and one discount per reward (a scalar discount is shared)."""
  rewards = np.asarray(tree.flatten(timestep.reward), np.float32)
  discounts = np.asarray(tree.flatten(timestep.discount), np.float32)
  if len(discounts) == 1:
    discounts = np.repeat(discounts, len(rewards))
  elif len(discounts) != len(rewards):
    raise ValueError(f'the discount {timestep.discount} must be a scalar or have the '
                     f'structure of the reward {timestep.reward}')
  return rewards, discounts
