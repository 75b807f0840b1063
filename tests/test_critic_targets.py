"""Critic targets end to end: episode end -> n-step adder -> learner, with discount != 0."""

import dataclasses

from acme import types
import jax
import numpy as np
import pytest
import reverb

from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax.config import MetaMimicConfig
from tests import helpers

# Discount 0.9: returns reach 10, so the derived support is [0, 10] (11 atoms, 1 apart).
CONFIG = dataclasses.replace(helpers.TINY_CONFIG, discount=0.9, n_step=3)


def _replay_items(config):
  """Every n-step item of one whole point-mass episode, as Acme's adder writes them."""
  builder, environment, spec = helpers.point_mass_setup(config)
  server = reverb.Server(builder.make_replay_tables(spec, False), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    adder = builder.make_adder(client, spec)
    environment.select_demonstration(0)
    timestep = environment.reset()
    adder.add_first(timestep)
    rewards = []
    while not timestep.last():
      action = np.full(2, 0.3, np.float32)
      timestep = environment.step(action)
      adder.add(action, timestep)
      rewards.append(timestep.reward)
    samples = client.sample(config.replay_table_name, num_samples=5000,
                            emit_timesteps=False, unpack_as_table_signature=True)
    layout = builder.make_transition_layout(spec)
    items = list({sample.info.key: helpers.one_transition(layout, sample.data)
                  for sample in samples}.values())
  finally:
    server.stop()
  return builder, spec, timestep, rewards, items


def test_demonstration_end_is_a_time_limit_for_both_critics():
  _, _, last, rewards, items = _replay_items(CONFIG)
  assert last.last() and float(last.discount) == 1.0
  g, n = CONFIG.discount, CONFIG.n_step
  # Acme writes the n - 1 shorter transitions that start an episode too.
  assert len(items) == len(rewards) + n - 1
  # The items that reach the episode's end keep a non-zero discount for both keys:
  # g^(k-1) for a transition of k steps, so the learner bootstraps from the last frame.
  last_return = {key: rewards[-1][key] for key in ('imitation', 'task')}
  ends = [item for item in items
          if abs(item.reward['imitation'] - last_return['imitation']) < 1e-7
          and abs(item.discount['imitation'] - 1.0) < 1e-7]
  assert len(ends) == 1  # The one-step transition into the last frame.
  assert ends[0].reward['task'] == pytest.approx(last_return['task'])
  assert ends[0].discount['task'] == pytest.approx(1.0)
  full = [item for item in items if abs(item.discount['task'] - g**(n - 1)) < 1e-6]
  assert len(full) == len(rewards) - (n - 1)
  assert not [item for item in items if item.discount['imitation'] == 0]


def _projected_cross_entropy(logits_tm1, atoms, r_t, discount_t, logits_t):
  """C51's categorical projection and cross-entropy, written out in numpy."""
  target_z = np.clip(r_t + discount_t * atoms, atoms[0], atoms[-1])
  probabilities_t = np.exp(logits_t - logits_t.max())
  probabilities_t /= probabilities_t.sum()
  delta = atoms[1] - atoms[0]
  projected = np.zeros_like(atoms)
  for z, p in zip(target_z, probabilities_t):
    position = (z - atoms[0]) / delta
    lower, upper = int(np.floor(position)), int(np.ceil(position))
    if lower == upper:
      projected[lower] += p
    else:
      projected[lower] += p * (upper - position)
      projected[upper] += p * (position - lower)
  log_probabilities_tm1 = logits_tm1 - logits_tm1.max()
  log_probabilities_tm1 -= np.log(np.exp(log_probabilities_tm1).sum())
  return -np.sum(projected * log_probabilities_tm1)


def test_learner_bootstraps_with_config_discount_times_item_discount():
  """The learner's critic loss equals a hand-computed C51 loss on real replay items."""
  builder, spec, _, _, items = _replay_items(CONFIG)
  batch = jax.tree.map(lambda *x: np.stack(x), *items[:8])
  # Distinct per-key discounts, so a swapped key cannot pass.
  batch = batch._replace(discount={'imitation': batch.discount['imitation'],
                                   'task': batch.discount['task'] * 0.5})
  networks = builder.make_networks(spec)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  state = learning.init_training_state(jax.random.PRNGKey(1), networks,
                                       dummy_observation, dummy_action, CONFIG)
  _, metrics = jax.jit(learning.make_sgd_step(networks, CONFIG))(state, batch)

  atoms = np.linspace(0.0, 10.0, CONFIG.num_atoms)
  np.testing.assert_allclose(np.asarray(networks.imitation.atoms), atoms, rtol=1e-6)
  for key in ('imitation', 'task'):
    agent, agent_state = getattr(networks, key), getattr(state, key)
    logits_tm1 = np.asarray(agent.critic.apply(agent_state.critic_params,
                                               batch.observation, batch.action))
    a_t = agent.policy.apply(agent_state.target_policy_params, batch.next_observation)
    logits_t = np.asarray(agent.critic.apply(agent_state.target_critic_params,
                                             batch.next_observation, a_t))
    expected = np.mean([_projected_cross_entropy(
        logits_tm1[i], atoms, batch.reward[key][i],
        CONFIG.discount * batch.discount[key][i], logits_t[i])
                        for i in range(len(items[:8]))])
    assert float(metrics[f'{key}/critic_loss']) == pytest.approx(expected, rel=1e-4)
    # A learner that forgot the config's discount would see a different loss.
    forgot = np.mean([_projected_cross_entropy(
        logits_tm1[i], atoms, batch.reward[key][i], batch.discount[key][i], logits_t[i])
                      for i in range(len(items[:8]))])
    assert abs(forgot - expected) > 1e-4


@pytest.mark.parametrize('kwargs, message', [
    (dict(discount=0.99, vmax=50.0), 'below the largest return the rewards can reach'),
    (dict(discount=1.0), 'discount must lie in [0, 1)'),
    (dict(vmin=5.0, vmax=4.0), 'must exceed vmin'),
])
def test_a_support_that_cannot_hold_the_returns_is_refused(kwargs, message):
  with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(')', r'\)')):
    MetaMimicConfig(**kwargs)


def test_vmax_follows_from_discount_and_reward_bound():
  assert MetaMimicConfig(discount=0.99).value_support == pytest.approx((0.0, 100.0))
  assert MetaMimicConfig(discount=0.9).value_support == pytest.approx((0.0, 10.0))
  assert MetaMimicConfig(discount=0.9, vmax=20.0).value_support == (0.0, 20.0)
