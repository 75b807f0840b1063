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

  def row_parts(self) -> Tuple[slice, slice, slice, slice]:
    """Where a vector holds the first observation's features, the action, the returns
    and the discounts: all but the next observation's features, which follow."""
    return self._features, self._action, self._returns, self._discounts

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


class NStepTransitionAdder(adders.Adder):
  """Writes n-step transitions (s_t, a_t, R_t:t+n, D_t:t+n, s_t+n) to one Reverb table.

  R and D follow Acme: R = r_t + g d_t r_t+1 + ... + g^(m-1) d_t..d_t+m-2 r_t+m-1 and
  D = g^(m-1) d_t..d_t+m-1, per reward key (a scalar discount applies to every key),
  with m = n except for the shorter transitions at an episode's start and end.

  It serves `num_environments` environments acting together (`environment` names one
  in add_first and add); an item holds that many transitions. With one environment it
  is an Acme adder. A caller that has already packed an observation with
  `layout.observation_packer` (the actor, for its policy) passes it as
  `packed_observation` to skip packing again.

  Each environment's open transitions are a window of n rows, the newest last, each row
  the start of a transition vector (first observation's features, action, returns and
  discounts so far; `TransitionLayout`), with the first observation's images beside
  it. An `add` stages its step; once every environment has staged one (or one stages
  again) the staged steps advance their windows together, by Acme's float32 recurrence
  (the same operations in the same order, elementwise), and each environment's oldest
  open transition ends. Those make an item when all environments took part; an
  episode's n - 1 shorter final transitions, and steps of fewer environments, wait in
  a queue that fills items. `reset` writes every full item and waits for it; `close`
  drops what is not yet in one.
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
    self.num_environments = count = num_environments
    self._items_per_write = items_per_write
    self._max_in_flight_items = max_in_flight_items
    self._writer: Optional[_CppWriter] = None
    self._features, self._action, self._returns, self._discounts = layout.row_parts()
    row_size = self._discounts.stop
    image_shapes = [tuple(s.shape) for s in layout.observation_packer.spec[1:]]
    self._windows = np.zeros((count, n_step, row_size), np.float32)
    self._window_images = [np.zeros((count, n_step, *shape), np.uint8)
                           for shape in image_shapes]
    self._open = np.zeros(count, np.int64)  # Open transitions per window.
    self._in_episode = [False] * count
    # Each environment's latest observation, and its staged step: the row it starts
    # (features filled in when it advances) and the observation it ends at.
    self._latest = [np.zeros((count, layout.observation_packer.size), np.float32)] + [
        np.zeros((count, *shape), np.uint8) for shape in image_shapes]
    self._staged_rows = np.zeros((count, row_size), np.float32)
    self._staged_next = [np.zeros_like(array) for array in self._latest]
    self._staged_last = [False] * count
    self._staged: List[int] = []
    # Ended transitions that fill items: blocks of columns [vectors, *first images,
    # *next images], each [transitions, ...], and how many transitions they hold.
    self._queue: List[List[np.ndarray]] = []
    self._queued = 0

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
    if environment in self._staged:
      self._advance()
    for array, part in zip(self._latest,
                           self._pack(timestep.observation, packed_observation)):
      array[environment] = part
    self._open[environment] = 0
    self._in_episode[environment] = True

  def add(self, action: types.NestedArray, next_timestep: dm_env.TimeStep,
          extras: types.NestedArray = (),
          packed_observation: Optional[packing.Packed] = None,
          environment: int = 0) -> None:
    if not self._in_episode[environment]:
      raise ValueError('adder.add_first must be called before adder.add')
    if extras:
      raise ValueError('this adder writes no extras')
    if environment in self._staged:
      self._advance()
    rewards = tree.flatten(next_timestep.reward)
    discounts = tree.flatten(next_timestep.discount)
    if len(discounts) not in (1, len(rewards)):
      raise ValueError(f'the discount {next_timestep.discount} must be a scalar or have '
                       f'the structure of the reward {next_timestep.reward}')
    row = self._staged_rows[environment]
    row[self._returns] = rewards
    row[self._discounts] = discounts
    row[self._action] = (np.ravel(action) if isinstance(action, np.ndarray) else
                         np.concatenate([np.ravel(a) for a in tree.flatten(action)]))
    for array, part in zip(self._staged_next,
                           self._pack(next_timestep.observation, packed_observation)):
      array[environment] = part
    self._staged_last[environment] = next_timestep.last()
    self._staged.append(environment)
    if len(self._staged) == self.num_environments:
      self._advance()
    if next_timestep.last() and self.num_environments == 1:
      self._write_items(until_in_flight=0)  # As Acme's end of an episode: all in.

  def reset(self) -> None:
    """Writes the staged steps and every full item, waits until all are in the table,
    and forgets every environment's open episode."""
    if self._writer is not None:
      self._advance()
      self._write_items(until_in_flight=0)
    self._in_episode = [False] * self.num_environments

  def close(self) -> None:
    """Ends the stream to the server, whose stop() would wait ~5 s on an open one;
    transitions not yet in an item and the open episodes are dropped."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    self._in_episode = [False] * self.num_environments
    self._staged, self._queue, self._queued = [], [], 0

  def _pack(self, observation, packed: Optional[packing.Packed]) -> packing.Packed:
    return self.layout.observation_packer.pack(observation) if packed is None else packed

  def _advance(self) -> None:
    """Advances the staged environments' windows by their staged steps and queues the
    transitions that end."""
    if not self._staged:
      return
    every = len(self._staged) == self.num_environments
    # All environments: the arrays themselves; some: copies, written back below.
    envs = slice(None) if every else np.asarray(self._staged)
    self._staged = []
    windows, rows = self._windows[envs], self._staged_rows[envs]
    window_images = [images[envs] for images in self._window_images]
    latest = [array[envs] for array in self._latest]
    rows[:, self._features] = latest[0]  # The new transitions start there.
    # Acme's recurrence on every open transition: D *= g; R += r D; D *= d.
    discounts = windows[..., self._discounts]
    discounts *= self._discount
    windows[..., self._returns] += rows[:, None, self._returns] * discounts
    discounts *= rows[:, None, self._discounts]
    # Shift the windows and open the transitions that start with this step.
    for window, new in zip([windows] + window_images, [rows] + latest[1:]):
      window[:, :-1] = window[:, 1:]
      window[:, -1] = new
    opened = np.minimum(self._open[envs] + 1, self._n_step)
    self._open[envs] = opened
    latest = [array[envs] for array in self._staged_next]
    if not every:
      self._windows[envs] = windows
      for array, window in zip(self._window_images, window_images):
        array[envs] = window
    for array, new in zip(self._latest, latest):
      array[envs] = new
    # Each environment's oldest open transition ends here; at an episode's end the
    # later ones too, shorter.
    steps = np.arange(len(opened))
    self._queue_transitions(windows, window_images, latest, steps, self._n_step - opened)
    for step, environment in enumerate(np.arange(self.num_environments)[envs]):
      if self._staged_last[environment]:
        later = np.arange(self._n_step - opened[step] + 1, self._n_step)
        self._queue_transitions(windows, window_images, latest,
                                np.full(len(later), step), later)
        self._in_episode[environment] = self._staged_last[environment] = False
    self._create_items()

  def _queue_transitions(self, windows: np.ndarray, window_images: List[np.ndarray],
                         latest: List[np.ndarray], steps: np.ndarray,
                         rows: np.ndarray) -> None:
    """Queues the transitions at `rows` of the windows of `steps` (indices into the
    arrays given), which end at those steps' `latest` observations."""
    if not len(rows):
      return
    features, *images = [array[steps] for array in latest]
    self._queue.append([np.concatenate([windows[steps, rows], features], axis=1),
                        *[window[steps, rows] for window in window_images], *images])
    self._queued += len(rows)

  def _create_items(self) -> None:
    """Makes the queue's transitions into items of `num_environments`, in order."""
    size = self.num_environments
    if self._queued < size:
      return
    columns = (self._queue[0] if len(self._queue) == 1 else
               [np.concatenate(parts) for parts in zip(*self._queue)])
    end = self._queued - self._queued % size
    for start in range(0, end, size):
      self._writer.create_item([column[start:start + size] for column in columns])
    self._queue = [[column[end:] for column in columns]] if end < self._queued else []
    self._queued -= end
    if self._writer.num_waiting_items >= self._items_per_write:
      self._write_items(self._max_in_flight_items)

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
