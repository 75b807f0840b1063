"""The pure learning step on synthetic batches (no Acme, no environment)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metamimic_jax import jax_utils
from metamimic_jax import learning
from metamimic_jax import losses
from metamimic_jax import networks as networks_lib
from tests.core import synthetic


def _setup(config=synthetic.TINY_CONFIG, spec=None):
  spec = spec or synthetic.point_mass_spec()
  networks = networks_lib.make_networks(spec, config)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  state = learning.init_training_state(jax.random.PRNGKey(0), networks,
                                       dummy_observation, dummy_action, config)
  return spec, networks, state


def test_pmapped_step_on_two_devices_equals_one_device_step():
  assert jax.local_device_count() == 2, 'conftest.py forces 2 host devices'
  config = synthetic.TINY_CONFIG
  spec, networks, state = _setup(config)
  batch = synthetic.random_batch(spec, 8)

  single_step = jax.jit(learning.make_sgd_step(networks, config))
  devices = jax.local_devices()
  pmapped = jax.pmap(learning.make_sgd_step(networks, config, axis_name='i'),
                     axis_name='i')
  sharded = jax_utils.put_sharded(jax_utils.shard(batch, 2), devices)
  single_state, multi_state = state, jax_utils.replicate(state, devices)
  for _ in range(2):
    single_state, single_metrics = single_step(single_state, batch)
    multi_state, multi_metrics = pmapped(multi_state, sharded)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
               single_state, jax_utils.get_from_first_device(multi_state))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
               single_metrics, jax_utils.get_from_first_device(multi_metrics))
  # The step really moved the parameters and both replicas agree.
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), state.imitation.policy_params,
                       single_state.imitation.policy_params)
  assert max(jax.tree.leaves(moved)) > 0
  replicas = jax.device_get(multi_state.imitation.critic_params)
  jax.tree.map(lambda x: np.testing.assert_array_equal(x[0], x[1]), replicas)


def test_target_networks_update_every_period():
  config = dataclasses.replace(synthetic.TINY_CONFIG, target_update_period=3)
  spec, networks, state = _setup(config)
  step = jax.jit(learning.make_sgd_step(networks, config))
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  targets = lambda agent: (agent.target_policy_params, agent.target_critic_params)
  online = lambda agent: (agent.policy_params, agent.critic_params)
  for i in range(1, 7):
    previous = {name: getattr(state, name) for name in ('imitation', 'task')}
    state, _ = step(state, synthetic.random_batch(spec, 8, seed=i))
    for name, before in previous.items():
      after = getattr(state, name)
      assert not same(online(after), online(before)), name  # Each step learns.
      if i % 3:
        assert same(targets(after), targets(before)), (name, i)
      else:
        assert same(targets(after), online(after)), (name, i)


def test_critic_learns_a_constant_reward():
  """With discount 0 the imitation critic's mean must approach the reward, 0.7."""
  config = dataclasses.replace(synthetic.TINY_CONFIG, learning_rate=3e-3, discount=0.5,
                               num_atoms=21)
  spec, networks, state = _setup(config)
  step = jax.jit(learning.make_sgd_step(networks, config))
  batch = synthetic.random_batch(spec, 16)
  batch = batch._replace(reward={'imitation': np.full(16, 0.7, np.float32),
                                 'task': batch.reward['task']},
                         discount={'imitation': np.zeros(16, np.float32),
                                   'task': batch.discount['task']})
  for _ in range(300):
    state, metrics = step(state, batch)
  assert abs(float(metrics['imitation/q_mean']) - 0.7) < 0.05


def test_one_policy_update_moves_the_action_towards_higher_q():
  """One DPG step (critic fixed) raises the batch's Q(s, pi(s)) along dQ/da."""
  config = synthetic.TINY_CONFIG
  spec, networks, full_state = _setup(config)
  batch = synthetic.random_batch(spec, 32)
  o_t = batch.next_observation  # The policy loss reads the next observations.
  for agent in ('imitation', 'task'):
    state, agent_networks = getattr(full_state, agent), getattr(networks, agent)

    def q(action):
      logits = agent_networks.critic.apply(state.critic_params, o_t, action)
      return losses.mean_value(logits, agent_networks.atoms)

    a_before = agent_networks.policy.apply(state.policy_params, o_t)
    dq_da = jax.grad(lambda a: q(a).sum())(a_before)
    new_state, _ = learning.actor_critic_update(
        state, agent_networks, learning.make_optimizer(config), batch.observation,
        batch.action, batch.reward[agent], batch.discount[agent], o_t,
        steps=jnp.zeros((), jnp.int32), target_update_period=config.target_update_period,
        clipping=config.clipping)
    a_after = agent_networks.policy.apply(new_state.policy_params, o_t)
    step = np.asarray(a_after - a_before, np.float64)
    assert np.abs(step).max() > 0, agent
    # The first-order change of sum Q is positive, and the true change follows it.
    assert np.sum(np.asarray(dq_da, np.float64) * step) > 0, agent
    assert float(q(a_after).sum()) > float(q(a_before).sum()), agent


def test_policy_warmup_trains_only_the_critics_until_its_step():
  config = dataclasses.replace(synthetic.TINY_CONFIG, policy_warmup_steps=2)
  spec, networks, state = _setup(config)
  step = jax.jit(learning.make_sgd_step(networks, config))
  batch = synthetic.random_batch(spec, 8)
  changed = lambda a, b: any(
      np.abs(x - y).max() > 0 for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  previous = state
  for i in range(3):
    new, _ = step(previous, batch)
    for agent in ('imitation', 'task'):
      old_agent, new_agent = getattr(previous, agent), getattr(new, agent)
      assert changed(old_agent.critic_params, new_agent.critic_params)
      # Steps 0 and 1 are the warm-up: policy and its optimizer state stay untouched.
      assert changed(old_agent.policy_params, new_agent.policy_params) == (i >= 2)
      assert changed(old_agent.policy_opt_state, new_agent.policy_opt_state) == (i >= 2)
    previous = new


def test_step_sizes_decay_along_a_cosine_to_their_final_fraction():
  config = dataclasses.replace(
      synthetic.TINY_CONFIG, learning_rate=1.0, policy_learning_rate=0.5,
      learning_rate_decay_steps=10, final_learning_rate_fraction=0.1)
  for make_optimizer, rate in ((learning.make_optimizer, 1.0),
                               (learning.make_policy_optimizer, 0.5)):
    for decay_config, decayed in ((config, True), (synthetic.TINY_CONFIG, False)):
      optimizer = make_optimizer(decay_config)
      opt_state = optimizer.init(jnp.zeros(()))
      sizes = []
      for _ in range(12):
        updates, opt_state = optimizer.update(jnp.ones(()), opt_state)
        sizes.append(-float(updates))  # Adam's update of a constant gradient: the size.
      if decayed:
        # By hand: rate (0.1 + 0.9 (1 + cos(pi t / 10)) / 2), from t = 10 on rate 0.1.
        expected = [rate * (0.1 + 0.45 * (1 + np.cos(np.pi * min(t, 10) / 10)))
                    for t in range(12)]
      else:  # TINY_CONFIG: one constant rate for both.
        expected = [synthetic.TINY_CONFIG.learning_rate] * 12
      np.testing.assert_allclose(sizes, expected, rtol=1e-4)  # float32 Adam.
  for bad in ({'learning_rate_decay_steps': 0}, {'final_learning_rate_fraction': 0.0},
              {'final_learning_rate_fraction': 1.5}):
    with pytest.raises(ValueError, match=next(iter(bad))):
      dataclasses.replace(config, **bad)


def test_scanned_steps_equal_that_many_single_steps():
  config = synthetic.TINY_CONFIG
  spec, networks, state = _setup(config)
  batches = [synthetic.random_batch(spec, 8, seed=i) for i in range(3)]
  sgd_step = learning.make_sgd_step(networks, config)
  single = state
  for batch in batches:
    single, single_metrics = jax.jit(sgd_step)(single, batch)
  stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
  scanned, scanned_metrics = jax.jit(learning.scan_sgd_steps(sgd_step))(state, stacked)
  assert int(scanned.steps) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               single, scanned)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               single_metrics, scanned_metrics)
