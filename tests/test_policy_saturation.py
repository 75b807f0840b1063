"""What keeps the policy out of tanh saturation: action rescaling and the pre-tanh penalty."""

import dataclasses

from acme import specs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metamimic_jax import losses
from metamimic_jax import networks as networks_lib
from tests import helpers


def _networks(action_minimum, action_maximum, config=helpers.TINY_CONFIG):
  _, _, spec = helpers.point_mass_setup(config)
  actions = specs.BoundedArray((2,), np.float32, action_minimum, action_maximum)
  return spec, networks_lib.make_actor_critic(actions, config, goal_conditioned=True)


def test_critic_sees_actions_rescaled_to_unit_range():
  spec, unit = _networks(-1.0, 1.0)
  _, wide = _networks(np.array([-5.0, 0.0]), np.array([5.0, 2.0]))
  observation, action = networks_lib.dummy_inputs(spec)
  params = unit.critic.init(jax.random.PRNGKey(0), observation, action)
  corners = np.array([[1.0, -1.0], [0.2, 0.5]], np.float32)
  observations = jax.tree.map(lambda x: np.repeat(x, 2, axis=0), observation)
  wide_actions = np.array([[5.0, 0.0], [1.0, 1.5]], np.float32)  # The same points.
  np.testing.assert_allclose(wide.critic.apply(params, observations, wide_actions),
                             unit.critic.apply(params, observations, corners), rtol=1e-5)


def test_policy_is_the_squashed_preactivation():
  spec, agent = _networks(np.array([-5.0, 0.0]), np.array([5.0, 2.0]))
  observation, _ = networks_lib.dummy_inputs(spec)
  params = agent.policy.init(jax.random.PRNGKey(1), observation)
  preactivation = agent.policy_preactivation.apply(params, observation)
  action = agent.policy.apply(params, observation)
  x = np.tanh(np.asarray(preactivation))
  np.testing.assert_allclose(action, [[5 * x[0, 0], 1 + x[0, 1]]], rtol=1e-5)
  np.testing.assert_allclose(agent.squash(jnp.asarray([[50.0, -50.0]])), [[5.0, 0.0]])


def test_preactivation_penalty_adds_its_mean_square_and_pulls_saturated_outputs_back():
  config = dataclasses.replace(helpers.TINY_CONFIG, policy_layer_sizes=(8,))
  spec, agent = _networks(-1.0, 1.0, config)
  observation, action = networks_lib.dummy_inputs(spec)
  policy_params = agent.policy.init(jax.random.PRNGKey(2), observation)
  critic_params = agent.critic.init(jax.random.PRNGKey(3), observation, action)
  # Saturate the policy: a huge output bias puts the tanh deep in its flat tail.
  policy_params = {**policy_params, 'linear': {**policy_params['linear'],
                                               'b': policy_params['linear']['b'] + 20.0}}
  preactivation = np.asarray(agent.policy_preactivation.apply(policy_params, observation))
  assert np.all(preactivation > 15)

  plain = losses.policy_loss(policy_params, critic_params, agent, observation)
  penalised = losses.policy_loss(policy_params, critic_params, agent, observation,
                                 preactivation_penalty=0.01)
  assert float(penalised - plain) == pytest.approx(
      0.01 * np.sum(preactivation**2), rel=1e-5)

  # Without the penalty the saturated policy gets (almost) no gradient; with it, one
  # gradient step lowers every pre-activation.
  grad_plain = jax.grad(losses.policy_loss)(policy_params, critic_params, agent,
                                           observation)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad_plain)) < 1e-6
  grads = jax.grad(losses.policy_loss)(policy_params, critic_params, agent, observation,
                                      True, 0.01)
  stepped = jax.tree.map(lambda p, g: p - 0.1 * g, policy_params, grads)
  after = np.asarray(agent.policy_preactivation.apply(stepped, observation))
  assert np.all(after < preactivation)
