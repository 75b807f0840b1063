import time

import dm_env
from acme import specs
from acme.adders import reverb as acme_adders
import numpy as np
import pytest
import reverb
import tree

from metamimic_jax import adders
from tests import helpers

N_STEP = 3
DISCOUNT = 0.9


def _environment_spec(dict_discount: bool) -> specs.EnvironmentSpec:
  frame = {'x': specs.Array((2,), np.float32), 'pixels': specs.Array((2, 2), np.uint8)}
  scalar = specs.Array((), np.float32)
  return specs.EnvironmentSpec(
      observations={'observation': frame, 'goal': dict(frame)},
      actions=specs.BoundedArray((2,), np.float32, -1.0, 1.0),
      rewards={'imitation': scalar, 'task': scalar},
      discounts={'imitation': scalar, 'task': scalar} if dict_discount else scalar)


def _episode(rng, length: int, end: str, dict_discount: bool):
  """(first timestep, [(action, timestep)]): random data, one mid-episode discount."""
  def observation():
    frame = lambda: {'x': rng.normal(size=2).astype(np.float32),
                     'pixels': rng.integers(0, 256, (2, 2)).astype(np.uint8)}
    return {'observation': frame(), 'goal': frame()}

  def discount(value):
    value = np.float32(value)
    # Per-key discounts differ, so a mix-up between keys shows.
    return {'imitation': value, 'task': np.float32(value * 0.5)} if dict_discount else value

  steps = []
  for t in range(1, length + 1):
    reward = {'imitation': np.float32(rng.uniform()), 'task': np.float32(rng.uniform())}
    observation_t = observation()
    if t < length:
      timestep = dm_env.transition(reward, observation_t, discount(0.5 if t == 2 else 1))
    elif end == 'termination':
      timestep = dm_env.termination(reward, observation_t)._replace(discount=discount(0))
    else:
      timestep = dm_env.truncation(reward, observation_t, discount(1))
    steps.append((rng.uniform(-1, 1, 2).astype(np.float32), timestep))
  return dm_env.restart(observation()), steps


def _items(client, table):
  count = client.server_info()[table].current_size
  samples = client.sample(table, num_samples=count, emit_timesteps=False,
                          unpack_as_table_signature=True)
  return [sample.data for sample in samples]


def _transitions(layout, items):
  """Every transition of `items`, in order (an item holds one or more)."""
  return [transition for item in items
          for transition in helpers.item_transitions(layout, item)]


@pytest.mark.parametrize('dict_discount', [False, True])
def test_writes_what_acme_writes(dict_discount):
  spec = _environment_spec(dict_discount)
  layout = adders.TransitionLayout(spec)
  server = reverb.Server([
      reverb.Table.queue('acme', 1000,
                         signature=acme_adders.NStepTransitionAdder.signature(spec)),
      reverb.Table.queue('lean', 1000, signature=layout.signature()),
      reverb.Table.queue('prepacked', 1000, signature=layout.signature())], port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    reference = acme_adders.NStepTransitionAdder(
        client, N_STEP, DISCOUNT, priority_fns={'acme': None})
    lean = adders.NStepTransitionAdder(client, 'lean', N_STEP, DISCOUNT, layout)
    # Given observations packed by the caller (as the actor does), and writing items
    # mid-episode in groups of 3, the same items.
    prepacked = adders.NStepTransitionAdder(client, 'prepacked', N_STEP, DISCOUNT, layout,
                                            items_per_write=3)
    pack = layout.observation_packer.pack
    rng = np.random.default_rng(0)
    # Terminations and truncations, longer and shorter than n, and a one-step episode.
    episodes = [_episode(rng, length, end, dict_discount)
                for length, end in ((7, 'termination'), (6, 'truncation'),
                                    (2, 'termination'), (1, 'truncation'))]
    for first, steps in episodes:
      reference.add_first(first)
      lean.add_first(first)
      prepacked.add_first(first, packed_observation=pack(first.observation))
      for action, timestep in steps:
        reference.add(action, timestep)
        lean.add(action, timestep)
        prepacked.add(action, timestep, packed_observation=pack(timestep.observation))
    expected = _items(client, 'acme')
    stored, stored_prepacked = _items(client, 'lean'), _items(client, 'prepacked')
  finally:
    server.stop()
  # Per episode of T steps: T + n - 1 items (min(T, n) - 1 fewer when T < n).
  assert len(expected) == (7 + 2) + (6 + 2) + (2 + 1) + 1
  assert len(stored) == len(stored_prepacked) == len(expected)
  # An item is 5 arrays (one vector, and each observation's two pixels), not Acme's 14
  # leaves; with one environment it holds one transition.
  assert len(tree.flatten(stored[0])) == 5 and len(stored[0].vector) == 1
  for want, got, got_prepacked in zip(expected, _transitions(layout, stored),
                                      _transitions(layout, stored_prepacked)):
    tree.map_structure(np.testing.assert_array_equal, want, got)
    tree.map_structure(np.testing.assert_array_equal, want, got_prepacked)
    tree.map_structure(lambda w, g: np.testing.assert_equal(g.dtype, w.dtype), want, got)


def test_environments_acting_together_share_items_of_one_transition_each():
  """Two environments stepped in turn, with episodes of different lengths: items of
  two transitions, in the order they finish, holding exactly the transitions Acme
  writes for each environment's episodes."""
  spec = _environment_spec(dict_discount=True)
  layout = adders.TransitionLayout(spec)
  server = reverb.Server([
      reverb.Table.queue('acme', 1000,
                         signature=acme_adders.NStepTransitionAdder.signature(spec)),
      reverb.Table.queue('lean', 1000, signature=layout.signature())], port=None)
  rng = np.random.default_rng(4)
  lengths = ((7, 2, 1), (6, 4, 1))  # Per environment.
  episodes = [[_episode(rng, length, 'termination', True) for length in per_environment]
              for per_environment in lengths]
  try:
    client = reverb.Client(f'localhost:{server.port}')
    reference = acme_adders.NStepTransitionAdder(
        client, N_STEP, DISCOUNT, priority_fns={'acme': None})
    for first, steps in episodes[0] + episodes[1]:
      reference.add_first(first)
      for action, timestep in steps:
        reference.add(action, timestep)
    expected = [tuple(helpers.flat_transition(item)) for item in _items(client, 'acme')]
    shared = adders.NStepTransitionAdder(client, 'lean', N_STEP, DISCOUNT, layout,
                                         num_environments=2, items_per_write=2)
    # Each environment's timesteps in order (first ones included), stepped in turn.
    queues = [[step for first, steps in per_environment
               for step in [(None, first)] + steps] for per_environment in episodes]
    for t in range(max(map(len, queues))):
      for environment, queue in enumerate(queues):
        if t < len(queue):
          action, timestep = queue[t]
          if timestep.first():
            shared.add_first(timestep, environment=environment)
          else:
            shared.add(action, timestep, environment=environment)
    shared.reset()  # Writes the last items and waits until they are in the table.
    items = _items(client, 'lean')
    shared.close()
  finally:
    server.stop()
  assert all(len(item.vector) == 2 for item in items)
  got = [tuple(helpers.flat_transition(transition))
         for transition in _transitions(layout, items)]
  # 9 + 3 + 1 and 8 + 6 + 1 transitions: 14 items of two, none left over.
  assert len(expected) == 28 and len(got) == 28
  assert sorted(got) == sorted(expected)
  # Each environment's transitions keep their order.
  first_environment = [t for t in got if t in expected[:13]]
  assert first_environment == expected[:13]


def test_adding_all_environments_at_once_writes_what_adding_each_in_turn_writes():
  """`add_all` (the actor's) and `add` for each environment in turn, with episodes of
  different lengths (shorter than n, one step, ending at different steps) and a
  reset right after each end, write the same items in the same order."""
  spec = _environment_spec(dict_discount=True)
  layout = adders.TransitionLayout(spec)
  server = reverb.Server([reverb.Table.queue(name, 1000, signature=layout.signature())
                          for name in ('turns', 'all')], port=None)
  rng = np.random.default_rng(5)
  # Per environment, episode lengths and ends: 10 steps in all for each.
  lengths = (((7, 'termination'), (2, 'truncation'), (1, 'termination')),
             ((6, 'truncation'), (4, 'termination')),
             ((1, 'truncation'), (1, 'termination'), (5, 'truncation'),
              (3, 'termination')))
  episodes = [[_episode(rng, length, end, True) for length, end in per_environment]
              for per_environment in lengths]
  # Per environment, each step's (first timestep of an episode it starts or None,
  # action, timestep).
  steps = [[(first if k == 0 else None, action, timestep)
            for first, episode in per_environment
            for k, (action, timestep) in enumerate(episode)]
           for per_environment in episodes]
  try:
    client = reverb.Client(f'localhost:{server.port}')
    in_turn = adders.NStepTransitionAdder(client, 'turns', N_STEP, DISCOUNT, layout,
                                          num_environments=3, items_per_write=2)
    at_once = adders.NStepTransitionAdder(client, 'all', N_STEP, DISCOUNT, layout,
                                          num_environments=3, items_per_write=2)
    with pytest.raises(ValueError, match='add_first must be called for every'):
      at_once.add_all(np.zeros((3, 2)), [steps[0][0][2]] * 3)
    for t in range(10):
      row = [per_environment[t] for per_environment in steps]
      for environment, (first, _, _) in enumerate(row):
        if first is not None:
          in_turn.add_first(first, environment=environment)
          at_once.add_first(first, environment=environment)
      for environment, (_, action, timestep) in enumerate(row):
        in_turn.add(action, timestep, environment=environment)
      at_once.add_all(np.stack([action for _, action, _ in row]),
                      [timestep for _, _, timestep in row])
    with pytest.raises(ValueError, match='2 timesteps for an adder of 3'):
      at_once.add_all(np.zeros((2, 2)), [steps[0][0][2]] * 2)
    in_turn.reset()  # Writes the last items and waits until they are in the table.
    at_once.reset()
    expected, got = _items(client, 'turns'), _items(client, 'all')
    in_turn.close()
    at_once.close()
  finally:
    server.stop()
  # An episode of T steps finishes T - 1 + min(T, n) transitions: 13 + 14 + 14 in
  # all, 13 items of three and two left over.
  assert len(expected) == len(got) == 13
  for want, have in zip(expected, got):
    tree.map_structure(np.testing.assert_array_equal, want, have)


def test_unpacks_a_batch_of_items():
  spec = _environment_spec(dict_discount=True)
  layout = adders.TransitionLayout(spec)
  server = reverb.Server([reverb.Table.queue('lean', 100, signature=layout.signature())],
                         port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = adders.NStepTransitionAdder(client, 'lean', N_STEP, DISCOUNT, layout)
    first, steps = _episode(np.random.default_rng(3), 5, 'termination', True)
    adder.add_first(first)
    for action, timestep in steps:
      adder.add(action, timestep)
    items = _items(client, 'lean')
  finally:
    server.stop()
  batch = tree.map_structure(lambda *x: np.stack(x), *items)
  unpacked = layout.unpack(batch)
  assert unpacked.action.shape == (len(items), 1, 2)
  for i, item in enumerate(items):
    tree.map_structure(lambda b, x, i=i: np.testing.assert_array_equal(b[i], x),
                       unpacked, layout.unpack(item))


@pytest.fixture(name='lean_client')
def _lean_client():
  """A client of a server with one FIFO table, 'lean', for the scalar-discount spec."""
  spec = _environment_spec(dict_discount=False)
  layout = adders.TransitionLayout(spec)
  server = reverb.Server([reverb.Table.queue('lean', 100, signature=layout.signature())],
                         port=None)
  yield reverb.Client(f'localhost:{server.port}'), layout
  server.stop()


def test_hand_computed_returns_and_discounts(lean_client):
  client, layout = lean_client
  adder = adders.NStepTransitionAdder(client, 'lean', n_step=2, discount=0.5,
                                      layout=layout)
  first, steps = _episode(np.random.default_rng(1), 3, 'termination', False)
  rewards = [np.float32(1), np.float32(2), np.float32(4)]
  steps = [(a, ts._replace(reward={'imitation': r, 'task': -r}))
           for (a, ts), r in zip(steps, rewards)]
  adder.add_first(first)
  for action, timestep in steps:
    adder.add(action, timestep)
  items = _transitions(layout, _items(client, 'lean'))
  observations = [first.observation] + [ts.observation for _, ts in steps]
  # (start, end, R, D): discounts d_0 = 1, d_1 = 0.5 (step 2), d_2 = 0 (termination).
  expected = [(0, 1, 1.0, 1.0), (0, 2, 1 + 0.5 * 1 * 2, 0.5 * 1 * 0.5),
              (1, 3, 2 + 0.5 * 0.5 * 4, 0.5 * 0.5 * 0), (2, 3, 4.0, 0.0)]
  assert len(items) == len(expected)
  for item, (start, end, ret, discount) in zip(items, expected):
    np.testing.assert_array_equal(item.observation['goal']['x'],
                                  observations[start]['goal']['x'])
    np.testing.assert_array_equal(item.next_observation['observation']['pixels'],
                                  observations[end]['observation']['pixels'])
    np.testing.assert_array_equal(item.action, steps[start][0])
    assert item.reward['imitation'] == ret and item.reward['task'] == -ret
    assert item.discount['imitation'] == discount == item.discount['task']


def test_items_are_written_in_groups_and_reach_the_table(lean_client):
  client, layout = lean_client
  adder = adders.NStepTransitionAdder(client, 'lean', n_step=2, discount=0.5,
                                      layout=layout, items_per_write=4,
                                      max_in_flight_items=1)
  first, steps = _episode(np.random.default_rng(2), 20, 'truncation', False)
  adder.add_first(first)
  sizes = []
  for action, timestep in steps:
    adder.add(action, timestep)
    sizes.append(client.server_info()['lean'].current_size)
  # The k-th add creates the k-th item; every 4th add writes the group, and the writer
  # then waits until at most 1 is unconfirmed. The episode's end writes all 21.
  assert sizes[:3] == [0, 0, 0]
  assert all(size >= 4 * (k // 4) - 1 for k, size in enumerate(sizes[:-1], start=1))
  assert all(size <= 4 * (k // 4) for k, size in enumerate(sizes[:-1], start=1))
  assert sizes[-1] == 20 + 1


def test_closing_ends_the_stream_so_the_server_stops_at_once():
  spec = _environment_spec(dict_discount=False)
  layout = adders.TransitionLayout(spec)
  server = reverb.Server([reverb.Table.queue('lean', 100, signature=layout.signature())],
                         port=None)
  client = reverb.Client(f'localhost:{server.port}')
  adder = adders.NStepTransitionAdder(client, 'lean', n_step=2, discount=0.5,
                                      layout=layout)
  first, steps = _episode(np.random.default_rng(3), 5, 'truncation', False)
  adder.add_first(first)
  for action, timestep in steps:
    adder.add(action, timestep)
  assert client.server_info()['lean'].current_size == 6
  adder.close()
  start = time.time()
  server.stop()
  # With the writer's stream open Reverb waits 5 s for it.
  assert time.time() - start < 2


def test_a_reward_or_discount_unlike_the_spec_is_refused_in_one_line(lean_client):
  client, layout = lean_client
  adder = adders.NStepTransitionAdder(client, 'lean', n_step=2, discount=0.5,
                                      layout=layout)
  first, steps = _episode(np.random.default_rng(6), 2, 'truncation', False)
  action, timestep = steps[0]
  adder.add_first(first)
  for bad in (timestep._replace(reward={'imitation': np.float32(1)}),
              timestep._replace(discount={'imitation': np.float32(1),
                                          'task': np.float32(1),
                                          'other': np.float32(1)})):
    with pytest.raises(ValueError, match='do not match the reward spec'):
      adder.add(action, bad)
  adder.add(action, timestep)  # The adder still takes good steps.
  adder.close()


def test_add_before_add_first_is_refused():
  layout = adders.TransitionLayout(_environment_spec(dict_discount=False))
  adder = adders.NStepTransitionAdder(client=None, table='t', n_step=1, discount=1.0,
                                      layout=layout)
  with pytest.raises(ValueError, match='add_first must be called'):
    adder.add(np.zeros(2), dm_env.transition(0.0, {}))
  with pytest.raises(ValueError, match='n_step must be'):
    adders.NStepTransitionAdder(client=None, table='t', n_step=0, discount=1.0,
                                layout=layout)
  with pytest.raises(ValueError, match='items_per_write must be'):
    adders.NStepTransitionAdder(client=None, table='t', n_step=1, discount=1.0,
                                layout=layout, items_per_write=0)
