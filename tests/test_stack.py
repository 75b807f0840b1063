"""The pinned stack itself: Reverb, Acme's n-step adder and dataset, sharded prefetch."""

import dataclasses
import threading
import time

import dm_env
import jax
import numpy as np
import pytest
import reverb

from metamimic_jax import demonstrators
from metamimic_jax import jax_utils
from metamimic_jax.environments import make_domain
from tests import helpers


@pytest.mark.timeout(120)
def test_rate_limited_table_blocks_actors_that_run_ahead_of_the_learner():
  config = dataclasses.replace(helpers.TINY_CONFIG, n_step=1, batch_size=2,
                               min_replay_size=5, samples_per_insert=4.0)
  builder, environment, spec = helpers.point_mass_setup(config)
  table, = builder.make_replay_tables(spec)
  server = reverb.Server([table], port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = builder.make_adder(client, spec)
    num_steps = 30

    def act():
      adder.add_first(environment.reset())
      for _ in range(num_steps):
        action = np.zeros(2, np.float32)
        adder.add(action, environment.step(action))
      adder.reset()  # Flushes the writer.

    actor = threading.Thread(target=act, daemon=True)
    actor.start()
    size = lambda: client.server_info()[config.replay_table_name].current_size
    blocked_size = _wait_until_stable(size)
    # Without samples the actor stops where another insert would exceed max_diff.
    assert actor.is_alive() and blocked_size < num_steps
    spi = config.samples_per_insert
    max_diff = table.info.rate_limiter_info.max_diff
    assert blocked_size * spi <= max_diff < (blocked_size + 1) * spi

    def sample(num):
      list(client.sample(config.replay_table_name, num, emit_timesteps=False,
                         unpack_as_table_signature=True))

    sample(int(3 * spi))  # Enough samples for exactly three more inserts.
    assert _wait_until_stable(size) == blocked_size + 3 and actor.is_alive()
    # Sampling as a learner would lets the actor finish. No draw blocks: while the
    # actor waits, the table allows more than max_diff - min_diff - spi more samples.
    # Once every item is in, no draw is needed (one more could wait forever if the
    # actor's thread is slow to end).
    deadline = time.time() + 60
    while size() < num_steps and time.time() < deadline:
      sample(1)
    actor.join(timeout=10)
    assert not actor.is_alive()
    assert size() == num_steps
  finally:
    server.stop()


def _wait_until_stable(value_fn, quiet_seconds=1.0, timeout=30.0):
  """value_fn() once it has not changed for `quiet_seconds`."""
  deadline = time.time() + timeout
  value, since = value_fn(), time.time()
  while time.time() - since < quiet_seconds:
    assert time.time() < deadline, 'the value kept changing'
    time.sleep(0.1)
    current = value_fn()
    if current != value:
      value, since = current, time.time()
  return value


def test_reverb_adder_and_sharded_dataset_round_trip():
  builder, environment, spec = helpers.point_mass_setup()
  server = reverb.Server(builder.make_replay_tables(spec, False), port=None)
  try:
    address = f'localhost:{server.port}'
    adder = builder.make_adder(reverb.Client(address), spec)
    # One episode following a demonstrator, with noise so the rewards vary.
    environment.select_demonstration(0)
    timestep = environment.reset()
    demonstrator = demonstrators.make_demonstrator(
        make_domain('point_mass'), environment.demonstration.seed, environment.environment)
    demonstrator.reset(timestep._replace(observation=timestep.observation['observation']))
    rng = np.random.default_rng(0)
    adder.add_first(timestep)
    actions, rewards = [], {'imitation': [], 'task': []}  # [t]: the step from o_t.
    while not timestep.last():
      raw = timestep._replace(observation=timestep.observation['observation'])
      action = np.clip(demonstrator.step(raw) + rng.normal(0, 0.2, 2), -1, 1)
      actions.append(action.astype(np.float32))
      timestep = environment.step(actions[-1])
      adder.add(actions[-1], timestep)
      for key in rewards:
        rewards[key].append(float(timestep.reward[key]))
    num_steps = len(actions)
    iterator = builder.make_dataset_iterator(address, spec)
    batch = next(iterator)
    per_device = builder.config.batch_size // 2
    assert batch.action.shape == (2, per_device, 2)
    assert batch.observation['goal']['position'].shape == (2, per_device, 1, 2)
    assert set(batch.reward) == {'imitation', 'task'}
    assert len(batch.action.sharding.device_set) == 2
    # Each row is an n-step transition from some o_t (its goal d_t+1 tells t) of k steps:
    # k = n mid-episode, 1..n-1 at the start (Acme writes those too) and near the end.
    g, n = builder.config.discount, builder.config.n_step
    frames = environment.demonstration.observations['position']
    rows = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), batch)
    for i in range(builder.config.batch_size):
      t, = np.flatnonzero(np.all(frames == rows.observation['goal']['position'][i, 0],
                                 axis=1)) - 1
      np.testing.assert_array_equal(rows.action[i], actions[t])
      discount = rows.discount['imitation'][i]
      if discount == 0:  # Ends at the episode's termination.
        k = num_steps - t
      else:
        k = 1 + round(np.log(discount) / np.log(g))
        np.testing.assert_allclose(discount, g**(k - 1), rtol=1e-6)
      assert 1 <= k <= min(n, num_steps - t)
      for key in rewards:
        expected = sum(g**j * rewards[key][t + j] for j in range(k))
        np.testing.assert_allclose(rows.reward[key][i], expected, rtol=1e-5, atol=1e-7)
      assert rows.discount['task'][i] == discount
    # Here the n-step sums have something to add up.
    assert np.std(rewards['imitation']) > 0.05 and 0 < np.mean(rewards['task']) < 1
  finally:
    server.stop()


def test_n_step_adder_accumulates_nested_rewards():
  builder, environment, spec = helpers.point_mass_setup()
  server = reverb.Server(builder.make_replay_tables(spec, False), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = builder.make_adder(client, spec)
    observation = environment.reset().observation
    adder.add_first(dm_env.restart(observation))
    rewards = [0.1, 0.2, 0.4]
    for r in rewards:
      adder.add(np.zeros(2, np.float32), dm_env.transition(
          {'imitation': np.float32(r), 'task': np.float32(1.0)}, observation,
          np.float32(1.0)))
    adder.reset()  # Writes the items waiting for a group to fill.
    samples = client.sample(builder.config.replay_table_name, num_samples=200,
                            emit_timesteps=False, unpack_as_table_signature=True)
    layout = builder.make_transition_layout(spec)
    items = {sample.info.key: helpers.one_transition(layout, sample.data)
             for sample in samples}.values()
    # The 3-step transition from the first step (discount g^2), beside shorter ones.
    g = builder.config.discount
    full = [item for item in items if abs(item.discount['imitation'] - g**2) < 1e-6]
    assert len(full) == 1
    np.testing.assert_allclose(full[0].reward['imitation'], 0.1 + g * 0.2 + g**2 * 0.4,
                               rtol=1e-6)
    np.testing.assert_allclose(full[0].reward['task'], 1 + g + g**2, rtol=1e-6)
    np.testing.assert_allclose(full[0].discount['task'], g**2, rtol=1e-6)
  finally:
    server.stop()


def test_each_device_gets_its_own_slice_of_every_batch():
  devices = jax.local_devices()
  assert len(devices) == 2, 'conftest.py forces 2 host devices'
  batches = [{'x': np.arange(24).reshape(8, 3) + 100 * i} for i in range(3)]
  prefetched = list(jax_utils.sharded_prefetch(iter(batches), devices))
  assert len(prefetched) == len(batches)  # In order, none lost or repeated.
  for batch, sharded in zip(batches, prefetched):
    assert sharded['x'].shape == (2, 4, 3)
    for shard in sharded['x'].addressable_shards:
      i = devices.index(shard.device)
      np.testing.assert_array_equal(shard.data[0], batch['x'][4 * i:4 * (i + 1)])
  builder, _, spec = helpers.point_mass_setup(
      dataclasses.replace(helpers.TINY_CONFIG, batch_size=7))
  with pytest.raises(ValueError, match='batch_size 7 must be divisible by the 2 devices'):
    builder.make_learner(jax.random.PRNGKey(0), builder.make_networks(spec), iter(()),
                         spec)
