"""The pinned stack itself: Reverb, Acme's n-step adder and dataset, sharded prefetch."""

import dm_env
import jax
import numpy as np
import reverb

from tests import helpers


def test_rate_limited_table_blocks_actors_that_run_ahead_of_the_learner():
  builder, _, spec = helpers.point_mass_setup()
  table, = builder.make_replay_tables(spec)
  limiter = table.info.rate_limiter_info
  config = builder.config
  assert limiter.samples_per_insert == config.samples_per_insert
  assert limiter.min_size_to_sample == config.min_replay_size
  # Inserts may lead samples by at most the error buffer (then the actor waits).
  assert limiter.max_diff - limiter.min_diff == 2 * max(
      config.min_replay_size * config.samples_per_insert_tolerance_rate *
      config.samples_per_insert, 2 * config.batch_size)


def test_reverb_adder_and_sharded_dataset_round_trip():
  builder, environment, spec = helpers.point_mass_setup()
  server = reverb.Server(builder.make_replay_tables(spec, False), port=None)
  try:
    address = f'localhost:{server.port}'
    adder = builder.make_adder(reverb.Client(address))
    timestep = environment.reset()
    adder.add_first(timestep)
    for _ in range(30):
      timestep = environment.step(np.full(2, 0.5, np.float32))
      adder.add(np.full(2, 0.5, np.float32), timestep)
      if timestep.last():
        timestep = environment.reset()
        adder.add_first(timestep)
    iterator = builder.make_dataset_iterator(address)
    batch = next(iterator)
    per_device = builder.config.batch_size // 2
    assert batch.action.shape == (2, per_device, 2)
    assert batch.observation['goal']['position'].shape == (2, per_device, 1, 2)
    assert set(batch.reward) == {'imitation', 'task'}
    assert len(batch.action.sharding.device_set) == 2
    np.testing.assert_array_equal(np.asarray(batch.action), 0.5)
    # n-step (3) returns of rewards in [0, 1] with discount 0.99.
    rewards = np.asarray(batch.reward['imitation'])
    assert np.all(rewards >= 0) and np.all(rewards <= 3.0)
    discounts = np.asarray(batch.discount['imitation'])
    # g^(n-1) mid-episode; shorter transitions near an episode's end; 0 at termination.
    allowed = np.array([0.0, 1.0, 0.99, 0.99**2], np.float32)
    assert np.all(np.min(np.abs(discounts[..., None] - allowed), -1) < 1e-6)
    assert np.any(np.abs(discounts - 0.99**2) < 1e-6)
  finally:
    server.stop()


def test_n_step_adder_accumulates_nested_rewards():
  builder, environment, spec = helpers.point_mass_setup()
  server = reverb.Server(builder.make_replay_tables(spec, False), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = builder.make_adder(client)
    observation = environment.reset().observation
    adder.add_first(dm_env.restart(observation))
    rewards = [0.1, 0.2, 0.4]
    for r in rewards:
      adder.add(np.zeros(2, np.float32), dm_env.transition(
          {'imitation': np.float32(r), 'task': np.float32(1.0)}, observation,
          np.float32(1.0)))
    samples = client.sample(builder.config.replay_table_name, num_samples=200,
                            emit_timesteps=False, unpack_as_table_signature=True)
    items = {sample.info.key: sample.data for sample in samples}.values()
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


def test_two_host_devices():
  assert jax.local_device_count() == 2
