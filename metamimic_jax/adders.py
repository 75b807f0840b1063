"""A lean n-step transition adder: Acme's transitions, written a batch at a time.

It writes the transitions of `acme.adders.reverb.NStepTransitionAdder` (the same
transitions, in the same order; tests/test_adders.py compares them) for one or several
environments acting together, and stores them as `TransitionLayout` says: a transition is
one float32 vector plus its two observations' images, and a replay item holds
`num_environments` transitions. Reverb's writer and the learner's dataset pay per call
and per column, so an item of one vector column written once for all the environments
acting together costs a fraction of an item per environment step (WORKSPACE_NOTES.md,
"Acting loop speed").

  - each environment's open n-step returns and discounts are lists of float32 scalars
    (one per reward key), advanced with each step by Acme's float32 recurrence (the
    same operations in the same order): for the few numbers an environment step adds,
    numpy scalars cost a third of what numpy's small-array operations do;
  - each environment's last n + 1 (packed) observations and n actions are kept here, so
    a finished transition is built as one vector;
  - finished transitions wait until they fill an item (in the order they finish: with
    environments stepped in turn, one each a step); an item is one writer row, its
    transitions' vectors and images stacked. So an observation's images are stored
    twice (as one transition's first and another's last observation): items that
    referenced shared image rows instead would need Reverb to read a column's cells out
    of order or twice, which its 0.7 writer cannot (it merges a chunk's references into
    one slice);
  - items are created in groups, then the writer waits until at most
    `max_in_flight_items` are unconfirmed; with one environment, at an episode's end,
    as Acme's, until all are (with several, an episode's last transitions may wait for
    other environments' to fill an item). Acme creates and sends every item as soon as
    its last step arrives, so every step wakes the writer's and the server's threads;
  - it appends and creates items through the C++ writer under Reverb's Python
    `TrajectoryWriter`: the Python layer flattens with paths and wraps every reference
    in column objects on each call. `_CppWriter` is the one place that reaches into
    Reverb's private API (pinned at 0.7).
"""

import collections
from typing import Deque, List, NamedTuple, Optional, Tuple

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
# Transitions put into items at once, and items left unconfirmed before the next group:
# with an episode's n - 1 last transitions (n <= 10), few enough that Reverb's writer
# never has the 50 pending items at which it logs that their number is "alarmingly high".
TRANSITIONS_PER_WRITE = 32
MAX_IN_FLIGHT_ITEMS = 8
# Acme's wait for the table signature: a distributed replay may take a while to start.
_SIGNATURE_TIMEOUT_MS = 300_000
# How replay stores transitions: 3 is `TransitionLayout` with items of several
# self-contained transitions (session 11). Replay checkpoints of an older layout cannot
# be resumed by this code.
LAYOUT_VERSION = 3


class StoredTransitions(NamedTuple):
  """A replay item: transitions as `TransitionLayout` stores them, [transitions, ...]."""
  vector: np.ndarray
  observation_images: Tuple[np.ndarray, ...]
  next_observation_images: Tuple[np.ndarray, ...]


class TransitionLayout:
  """How replay stores n-step transitions: one float32 vector each, and the images.

  The vector is [observation features | action | returns | discounts | next
  observation features] (one return and one discount per reward leaf). `unpack` turns
  stored items, of any leading shape, back into Acme's `Transition`, with the dtypes of
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
    self._next_features = slice(self._discounts.stop, self._discounts.stop + features)
    self.size = self._next_features.stop

  def signature(self) -> StoredTransitions:
    """Items of any number of transitions."""
    images = tuple(tf.TensorSpec((None, *s.shape), tf.uint8)
                   for s in self.observation_packer.spec[1:])
    return StoredTransitions(tf.TensorSpec((None, self.size), tf.float32), images, images)

  def vector(self, features: np.ndarray, action: np.ndarray, returns: List[np.float32],
             discounts: List[np.float32], next_features: np.ndarray) -> np.ndarray:
    """One transition's vector (action flat; a return and a discount per reward leaf)."""
    return np.concatenate([features, action, returns, discounts, next_features],
                          dtype=np.float32)

  def unpack(self, item: StoredTransitions) -> types.Transition:
    spec = self._transition_spec
    unpack = self.observation_packer.unpack
    vector = item.vector
    batch_shape = vector.shape[:-1]

    def scalars(part, specs_nest):
      return jax.tree.unflatten(self._reward_treedef, [
          vector[..., i].astype(s.dtype.as_numpy_dtype) for i, s in zip(
              range(part.start, part.stop), jax.tree.leaves(specs_nest))])

    return types.Transition(
        observation=unpack((vector[..., self._features], *item.observation_images)),
        action=vector[..., self._action].reshape(
            batch_shape + self._action_shape).astype(spec.action.dtype.as_numpy_dtype),
        reward=scalars(self._returns, spec.reward),
        discount=scalars(self._discounts, spec.discount),
        next_observation=unpack((vector[..., self._next_features],
                                 *item.next_observation_images)),
        extras=())


class _Episode:
  """One environment's episode so far, as far as its open transitions reach back: the
  last n + 1 observations, the last n actions and the open returns and discounts (row
  i: the transition from observations[i], oldest first)."""

  def __init__(self, n_step: int, first: packing.Packed):
    self.observations: Deque[packing.Packed] = collections.deque([first],
                                                                 maxlen=n_step + 1)
    self.actions: Deque[np.ndarray] = collections.deque(maxlen=n_step)
    self.returns: List[List[np.float32]] = []
    self.discounts: List[List[np.float32]] = []


class NStepTransitionAdder(adders.Adder):
  """Writes n-step transitions (s_t, a_t, R_t:t+n, D_t:t+n, s_t+n) to one Reverb table.

  R and D follow Acme: R = r_t + g d_t r_t+1 + ... + g^(m-1) d_t..d_t+m-2 r_t+m-1 and
  D = g^(m-1) d_t..d_t+m-1, per reward key (a scalar discount applies to every key),
  with m = n except for the shorter transitions at an episode's start and end.

  It serves `num_environments` environments acting together (`environment` names one
  in add_first and add); an item holds that many transitions, and finished transitions
  that do not yet fill one are dropped by `close`. With one environment it is an Acme
  adder. A caller that has already packed an observation with
  `layout.observation_packer` (the actor, for its policy) passes it as
  `packed_observation` to skip packing again.
  """

  def __init__(self, client: reverb.Client, table: str, n_step: int, discount: float,
               layout: TransitionLayout, num_environments: int = 1,
               items_per_write: Optional[int] = None,
               max_in_flight_items: int = MAX_IN_FLIGHT_ITEMS):
    if n_step < 1:
      raise ValueError(f'n_step must be >= 1, got {n_step}')
    if num_environments < 1:
      raise ValueError(f'num_environments must be >= 1, got {num_environments}')
    if items_per_write is None:
      items_per_write = max(1, TRANSITIONS_PER_WRITE // num_environments)
    if items_per_write < 1:
      raise ValueError(f'items_per_write must be >= 1, got {items_per_write}')
    self._client = client
    self._table = table
    self._n_step = n_step
    self._discount = np.float32(discount)
    self.layout = layout
    self.num_environments = num_environments
    self._items_per_write = items_per_write
    self._max_in_flight_items = max_in_flight_items
    self._writer: Optional[_CppWriter] = None
    self._episodes: List[Optional[_Episode]] = [None] * num_environments
    # Finished transitions not yet in an item: (vector, first images, next images).
    self._finished: List[Tuple[np.ndarray, tuple, tuple]] = []

  def add_first(self, timestep: dm_env.TimeStep,
                packed_observation: Optional[packing.Packed] = None,
                environment: int = 0) -> None:
    if not timestep.first():
      raise ValueError('adder.add_first needs a first timestep (timestep.first())')
    if self._writer is None:
      self._writer = _CppWriter(self._client.trajectory_writer(
          # A group, and the items an episode's end adds to it.
          num_keep_alive_refs=self._items_per_write + self._n_step,
          get_signature_timeout_ms=_SIGNATURE_TIMEOUT_MS))
    self._episodes[environment] = _Episode(
        self._n_step, self._pack(timestep.observation, packed_observation))

  def add(self, action: types.NestedArray, next_timestep: dm_env.TimeStep,
          extras: types.NestedArray = (),
          packed_observation: Optional[packing.Packed] = None,
          environment: int = 0) -> None:
    episode = self._episodes[environment]
    if episode is None:
      raise ValueError('adder.add_first must be called before adder.add')
    if extras:
      raise ValueError('this adder writes no extras')
    _advance(episode, *_flat_reward_and_discount(next_timestep), self._discount,
             self._n_step)
    episode.actions.append(np.ravel(action) if isinstance(action, np.ndarray)
                           else np.concatenate([np.ravel(a) for a in tree.flatten(action)]))
    features, *images = self._pack(next_timestep.observation, packed_observation)
    episode.observations.append((features, *images))
    # The oldest open transition ends here: from observations[0], by actions[0].
    # At an episode's end the later ones end here too, shorter.
    last = len(episode.returns) if next_timestep.last() else 1
    for i in range(last):
      first_features, *first_images = episode.observations[i]
      self._finished.append((self.layout.vector(
          first_features, episode.actions[i], episode.returns[i], episode.discounts[i],
          features), first_images, images))
    self._create_items()
    if next_timestep.last():
      self._episodes[environment] = None
      if self.num_environments == 1:  # As Acme's end of an episode: all confirmed.
        self._write_items(until_in_flight=0)
    if self._writer.num_waiting_items >= self._items_per_write:
      self._write_items(self._max_in_flight_items)

  def reset(self) -> None:
    """Writes the waiting items and waits until all are in the table, then forgets every
    environment's open episode; finished transitions that do not yet fill an item stay
    queued for the next."""
    if self._writer is not None:
      self._write_items(until_in_flight=0)
    self._episodes = [None] * self.num_environments

  def close(self) -> None:
    """Ends the stream to the server, whose stop() would wait ~5 s on an open one;
    transitions not yet in an item and the open episodes are dropped."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    self._episodes = [None] * self.num_environments
    self._finished = []

  def _pack(self, observation, packed: Optional[packing.Packed]) -> packing.Packed:
    return self.layout.observation_packer.pack(observation) if packed is None else packed

  def _create_items(self) -> None:
    size = self.num_environments
    while len(self._finished) >= size:
      transitions, self._finished = self._finished[:size], self._finished[size:]
      vectors, first_images, next_images = zip(*transitions)
      self._writer.create_item(
          [_stack(vectors)] + [_stack(column) for column in zip(*first_images)] +
          [_stack(column) for column in zip(*next_images)])

  def _write_items(self, until_in_flight: int) -> None:
    """Creates the waiting items, then waits until at most `until_in_flight` of all
    items written are unconfirmed."""
    self._writer.write_items(self._table, _PRIORITY)
    self._writer.flush(until_in_flight)


def _stack(arrays: Tuple[np.ndarray, ...]) -> np.ndarray:
  """np.stack, without its checks for one array (a twentieth of its time)."""
  return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def _advance(episode: _Episode, rewards: List[np.float32], discounts: List[np.float32],
             discount: np.float32, n_step: int) -> None:
  """Adds a step's rewards to the episode's open transitions (Acme's float32 recurrence,
  per reward key: D *= g; R += r D; D *= d), opens one that starts with them and keeps
  the last n."""
  for returns, total_discounts in zip(episode.returns, episode.discounts):
    for k, (reward, step_discount) in enumerate(zip(rewards, discounts)):
      total_discount = total_discounts[k] * discount
      returns[k] = returns[k] + reward * total_discount
      total_discounts[k] = total_discount * step_discount
  episode.returns.append(list(rewards))
  episode.discounts.append(list(discounts))
  if len(episode.returns) > n_step:
    del episode.returns[0], episode.discounts[0]


class _CppWriter:
  """Appends rows and creates items with Reverb's C++ trajectory writer directly: an
  item is one row, all of it. Items wait, as the rows they read, until `write_items`."""

  def __init__(self, writer: reverb.TrajectoryWriter):
    self._writer = writer
    self._cpp = writer._writer  # pylint: disable=protected-access
    self._waiting_items: List[list] = []  # Each item's row of references.

  @property
  def num_waiting_items(self) -> int:
    return len(self._waiting_items)

  def create_item(self, columns: List[np.ndarray]) -> None:
    """Queues the item of one row holding `columns`."""
    self._waiting_items.append(self._cpp.Append(columns))

  def write_items(self, table: str, priority: float) -> None:
    for references in self._waiting_items:
      self._cpp.CreateItem(table, priority, [[r] for r in references],
                           [True] * len(references))
    self._waiting_items = []

  def flush(self, block_until_num_items: int) -> None:
    self._writer.flush(block_until_num_items)

  def close(self) -> None:
    self._writer.close()


def _flat_reward_and_discount(timestep: dm_env.TimeStep
                              ) -> Tuple[List[np.float32], List[np.float32]]:
  """Flat float32 rewards, and one discount per reward (a scalar discount is shared)."""
  rewards = [np.float32(r) for r in tree.flatten(timestep.reward)]
  discounts = [np.float32(d) for d in tree.flatten(timestep.discount)]
  if len(discounts) == 1:
    return rewards, discounts * len(rewards)
  if len(discounts) != len(rewards):
    raise ValueError(f'the discount {timestep.discount} must be a scalar or have the '
                     f'structure of the reward {timestep.reward}')
  return rewards, discounts
