"""A lean n-step transition adder: Acme's transitions, written a batch at a time.

It writes the transitions of `acme.adders.reverb.NStepTransitionAdder` (the same
transitions, in the same order; tests/test_adders.py compares them) for one or several
environments acting together, and stores them as `TransitionLayout` says: a transition is
one float32 vector plus its two observations' images, and a replay item holds
`num_environments` transitions. Reverb's writer and the learner's dataset pay per call
and per column, so an item of one vector column written once for all the environments
acting together costs a fraction of an item per environment step (WORKSPACE_NOTES.md,
"Acting loop speed").

  - all environments' open episodes are windows of numpy arrays (`_Episodes`): each
    open transition's vector up to its next observation, and its first observation's
    images, for the last n + 1 observations. `add_all` advances every environment's
    episode with a dozen whole-array operations (Acme's float32 recurrence, the same
    operations in the same order, on all open transitions at once), so the step of 16
    environments costs about what one environment's did; `add` is the same for one
    environment;
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

import operator
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple

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


class _Transitions(NamedTuple):
  """Finished transitions: vectors [T, size], and each image column of their first and
  next observations [T, ...]."""
  vectors: np.ndarray
  first_images: Tuple[np.ndarray, ...]
  next_images: Tuple[np.ndarray, ...]


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
    self.num_rewards = self._reward_treedef.num_leaves
    self.features = slice(0, features)
    self.action = slice(features, features + action_size)
    self.returns = slice(self.action.stop, self.action.stop + self.num_rewards)
    self.discounts = slice(self.returns.stop, self.returns.stop + self.num_rewards)
    self.next_features = slice(self.discounts.stop, self.discounts.stop + features)
    self.size = self.next_features.stop
    reward_spec = self._transition_spec.reward
    if isinstance(reward_spec, Mapping) and not any(map(tree.is_nested,
                                                        reward_spec.values())):
      # A dict of scalars (the demo env's): one itemgetter, a tenth of tree.flatten.
      getter = operator.itemgetter(*sorted(reward_spec))
      self.flat_reward = ((lambda reward: (getter(reward),)) if len(reward_spec) == 1
                          else getter)
    else:
      self.flat_reward = tree.flatten

  def signature(self) -> StoredTransitions:
    """Items of any number of transitions."""
    images = tuple(tf.TensorSpec((None, *s.shape), tf.uint8)
                   for s in self.observation_packer.spec[1:])
    return StoredTransitions(tf.TensorSpec((None, self.size), tf.float32), images, images)

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
        observation=unpack((vector[..., self.features], *item.observation_images)),
        action=vector[..., self.action].reshape(
            batch_shape + self._action_shape).astype(spec.action.dtype.as_numpy_dtype),
        reward=scalars(self.returns, spec.reward),
        discount=scalars(self.discounts, spec.discount),
        next_observation=unpack((vector[..., self.next_features],
                                 *item.next_observation_images)),
        extras=())


class _Episodes:
  """The open episodes of several environments, as windows that shift a step a step.

  Environment i, `steps[i]` = t steps into its episode (-1: none open), holds the
  transition from observation t - k in `transitions[i, n - k]` (k = 0 .. n): its
  vector as far as it is known ([features | action | returns | discounts], the
  layout's vector up to the next observation; the features alone for k = 0, the
  latest observation, until the step from it), and that observation's images in
  `images[i, n - k]`. The windows of all environments shift together, so every step
  is a few whole-array operations however many environments act. Rows of transitions
  that have finished, or of no transition yet (zeros), are advanced unread.
  """

  def __init__(self, num_environments: int, n_step: int, layout: TransitionLayout):
    self.n_step = n_step
    self.layout = layout
    self.steps = np.full(num_environments, -1)
    self.transitions = np.zeros(
        (num_environments, n_step + 1, layout.next_features.start), np.float32)
    self.images = tuple(np.zeros((num_environments, n_step + 1) + spec.shape, np.uint8)
                        for spec in layout.observation_packer.spec[1:])
    self._all = np.arange(num_environments)
    self.num_open = 0

  def start(self, environment: int, packed: packing.Packed) -> None:
    features, *images = packed
    n = self.n_step
    self.num_open += self.steps[environment] < 0
    self.steps[environment] = 0
    self.transitions[environment] = 0
    self.transitions[environment, n, self.layout.features] = features
    for window, image in zip(self.images, images):
      window[environment, n] = image

  def close(self) -> None:
    self.steps[:] = -1
    self.num_open = 0

  def advance(self, rows: slice, actions: np.ndarray, rewards_and_discounts: np.ndarray,
              discount: np.float32, packed: packing.Packed,
              ended: List[int]) -> _Transitions:
    """One step of the open episodes in `rows`: [R, ...] actions, [R, returns |
    discounts] as in the layout, the next observations, and which rows' episodes they
    end (positions in `rows`); returns the transitions that finish, each
    environment's in order (the oldest open one, and at an episode's end all the
    shorter ones after it), environment by environment."""
    n, layout = self.n_step, self.layout
    steps = self.steps[rows]  # A view.
    features, *images = packed
    window, image_windows = self.transitions[rows], [w[rows] for w in self.images]
    num_rewards = layout.num_rewards
    rewards = rewards_and_discounts[:, None, :num_rewards]
    discounts = rewards_and_discounts[:, None, num_rewards:]
    # The open transitions: D *= g; R += r D; D *= d. The latest observation's opens.
    total_discounts = window[:, :n, layout.discounts]
    total_discounts *= discount
    window[:, :n, layout.returns] += rewards * total_discounts
    total_discounts *= discounts
    window[:, n, layout.action] = actions
    window[:, n, layout.returns.start:] = rewards_and_discounts
    # The oldest open transition finishes, and at an episode's end the later ones too.
    next_features, next_images = features, images
    if not ended and steps.min() >= n - 1:  # Every episode n steps in: oldest at 1.
      environments, positions = slice(None), 1  # A view.
    else:
      oldest = n - np.minimum(steps, n - 1)
      environments, positions = self._all[:len(steps)], oldest
      if ended:
        environments = np.concatenate([np.full(n - oldest[i] + 1 if i in ended else 1, i)
                                       for i in range(len(steps))])
        positions = np.concatenate([np.arange(oldest[i], n + 1) if i in ended
                                    else oldest[i:i + 1] for i in range(len(steps))])
        next_features, next_images = features[environments], [image[environments]
                                                               for image in images]
    finished = _Transitions(
        np.concatenate([window[environments, positions], next_features], axis=1),
        # Copies (the windows shift below).
        tuple(np.array(w[environments, positions]) for w in image_windows),
        tuple(next_images))
    # Shift: the next observation is the latest.
    window[:, :n] = window[:, 1:]
    window[:, n, layout.features] = features
    for image_window, image in zip(image_windows, images):
      image_window[:, :n] = image_window[:, 1:]
      image_window[:, n] = image
    steps += 1
    if ended:
      steps[ended] = -1
      self.num_open -= len(ended)
    return finished


class NStepTransitionAdder(adders.Adder):
  """Writes n-step transitions (s_t, a_t, R_t:t+n, D_t:t+n, s_t+n) to one Reverb table.

  R and D follow Acme: R = r_t + g d_t r_t+1 + ... + g^(m-1) d_t..d_t+m-2 r_t+m-1 and
  D = g^(m-1) d_t..d_t+m-1, per reward key (a scalar discount applies to every key),
  with m = n except for the shorter transitions at an episode's start and end.

  It serves `num_environments` environments acting together (`environment` names one
  in add_first and add; `add_all` steps all of them at once, as `add` for each in
  turn would); an item holds that many transitions, and finished transitions that do
  not yet fill one are dropped by `close`. With one environment it is an Acme adder. A
  caller that has already packed observations with `layout.observation_packer` (the
  actor, for its policy) passes them as `packed_observation(s)` to skip packing again.
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
    self._episodes = _Episodes(num_environments, n_step, layout)
    # Finished transitions not yet in an item, oldest first.
    self._finished: List[_Transitions] = []

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
    self._episodes.start(environment, self._pack(timestep.observation,
                                                 packed_observation))

  def add(self, action: types.NestedArray, next_timestep: dm_env.TimeStep,
          extras: types.NestedArray = (),
          packed_observation: Optional[packing.Packed] = None,
          environment: int = 0) -> None:
    if self._episodes.steps[environment] < 0:
      raise ValueError('adder.add_first must be called before adder.add')
    if extras:
      raise ValueError('this adder writes no extras')
    action = (action if isinstance(action, np.ndarray)
              else np.concatenate([np.ravel(a) for a in tree.flatten(action)]))
    packed = self._pack(next_timestep.observation, packed_observation)
    self._advance(slice(environment, environment + 1), action.reshape(1, -1),
                  [next_timestep], tuple(part[None] for part in packed))

  def add_all(self, actions: np.ndarray, next_timesteps: Sequence[dm_env.TimeStep],
              packed_observations: Optional[packing.Packed] = None) -> None:
    """`add` of actions[i] and next_timesteps[i] for every environment i, in order;
    `packed_observations` are the timesteps' observations packed and stacked."""
    if len(next_timesteps) != self.num_environments:
      raise ValueError(f'{len(next_timesteps)} timesteps for an adder of '
                       f'{self.num_environments} environments')
    if self._episodes.num_open < self.num_environments:
      raise ValueError('adder.add_first must be called for every environment before '
                       'adder.add_all')
    if packed_observations is None:
      packed_observations = self.layout.observation_packer.pack_all(
          [timestep.observation for timestep in next_timesteps])
    self._advance(slice(None), np.reshape(actions, (self.num_environments, -1)),
                  next_timesteps, packed_observations)

  def reset(self) -> None:
    """Writes the waiting items and waits until all are in the table, then forgets every
    environment's open episode; finished transitions that do not yet fill an item stay
    queued for the next."""
    if self._writer is not None:
      self._write_items(until_in_flight=0)
    self._episodes.close()

  def close(self) -> None:
    """Ends the stream to the server, whose stop() would wait ~5 s on an open one;
    transitions not yet in an item and the open episodes are dropped."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    self._episodes.close()
    self._finished = []

  def _pack(self, observation, packed: Optional[packing.Packed]) -> packing.Packed:
    return self.layout.observation_packer.pack(observation) if packed is None else packed

  def _advance(self, rows: slice, actions: np.ndarray,
               next_timesteps: Sequence[dm_env.TimeStep],
               packed: packing.Packed) -> None:
    ended = [i for i, timestep in enumerate(next_timesteps) if timestep.last()]
    self._finished.append(self._episodes.advance(
        rows, actions, _rewards_and_discounts(next_timesteps, self.layout),
        self._discount, packed, ended))
    self._create_items()
    if self.num_environments == 1 and ended:  # As Acme's end of an episode.
      self._write_items(until_in_flight=0)
    if self._writer.num_waiting_items >= self._items_per_write:
      self._write_items(self._max_in_flight_items)

  def _create_items(self) -> None:
    """Creates an item of each `num_environments` finished transitions, oldest first."""
    size = self.num_environments
    if len(self._finished) > 1:
      self._finished = [_Transitions(*(
          np.concatenate(column) if isinstance(column[0], np.ndarray)
          else tuple(np.concatenate(images) for images in zip(*column))
          for column in zip(*self._finished)))]
    finished, = self._finished
    count = len(finished.vectors)
    for start in range(0, count - size + 1, size):
      part = slice(start, start + size)
      self._writer.create_item([finished.vectors[part]] +
                               [images[part] for images in finished.first_images] +
                               [images[part] for images in finished.next_images])
    left = count % size
    self._finished = [] if not left else [_Transitions(
        finished.vectors[count - left:],
        tuple(images[count - left:] for images in finished.first_images),
        tuple(images[count - left:] for images in finished.next_images))]

  def _write_items(self, until_in_flight: int) -> None:
    """Creates the waiting items, then waits until at most `until_in_flight` of all
    items written are unconfirmed."""
    self._writer.write_items(self._table, _PRIORITY)
    self._writer.flush(until_in_flight)


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


def _rewards_and_discounts(timesteps: Sequence[dm_env.TimeStep],
                           layout: TransitionLayout) -> np.ndarray:
  """Each timestep's float32 [rewards | discounts], flat, a discount per reward (a
  scalar discount is every reward's): [len(timesteps), 2 num_rewards]."""
  num_rewards = layout.num_rewards
  if tree.is_nested(timesteps[0].discount):
    flat_discount = tree.flatten
  else:
    flat_discount = lambda discount: (discount,) * num_rewards
  try:
    values = np.array([(*layout.flat_reward(timestep.reward),
                        *flat_discount(timestep.discount)) for timestep in timesteps],
                      np.float32)
  except (KeyError, TypeError, ValueError):  # A missing key, a ragged or nested row.
    values = None
  if values is None or values.shape[1:] != (2 * num_rewards,):
    raise ValueError(f'the reward {timesteps[0].reward} and discount '
                     f'{timesteps[0].discount} do not match the reward spec '
                     f'({num_rewards} values; the discount a scalar or one per reward)')
  return values
