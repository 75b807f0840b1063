from acme import specs
import jax
import numpy as np

from metamimic_jax import networks as networks_lib
from tests import helpers


def _observation(spec, batch, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: rng.normal(size=(batch,) + s.shape).astype(s.dtype), spec.observations)


def test_shapes_bounds_and_goal_conditioning():
  _, _, spec = helpers.point_mass_setup()
  networks = networks_lib.make_networks(spec, helpers.TINY_CONFIG)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  observation = _observation(spec, 5)
  other_goal = dict(observation, goal=_observation(spec, 5, seed=1)['goal'])
  action = np.zeros((5,) + spec.actions.shape, np.float32)
  for agent, conditioned in ((networks.imitation, True), (networks.task, False)):
    policy_params = agent.policy.init(jax.random.PRNGKey(0), dummy_observation)
    critic_params = agent.critic.init(jax.random.PRNGKey(1), dummy_observation,
                                      dummy_action)
    a = agent.policy.apply(policy_params, observation)
    assert a.shape == (5,) + spec.actions.shape
    assert np.all(a >= spec.actions.minimum) and np.all(a <= spec.actions.maximum)
    logits = agent.critic.apply(critic_params, observation, action)
    assert logits.shape == (5, helpers.TINY_CONFIG.num_atoms)
    moved = agent.policy.apply(policy_params, other_goal)
    assert (not np.allclose(a, moved)) == conditioned
  assert agent.atoms.shape == (helpers.TINY_CONFIG.num_atoms,)


def test_pixels_go_through_the_residual_conv_torso():
  action_spec = specs.BoundedArray((3,), np.float32, -2.0, 2.0)
  observation_spec = {
      'observation': {'pixels': specs.Array((16, 16, 3), np.uint8),
                      'joints': specs.Array((4,), np.float32)},
      'goal': {'pixels': specs.Array((2, 16, 16, 3), np.uint8),
               'joints': specs.Array((2, 4), np.float32)}}
  spec = specs.EnvironmentSpec(observation_spec, action_spec,
                               specs.Array((), np.float32), specs.Array((), np.float32))
  networks = networks_lib.make_networks(spec, helpers.TINY_CONFIG)
  dummy_observation, _ = networks_lib.dummy_inputs(spec)
  params = networks.imitation.policy.init(jax.random.PRNGKey(0), dummy_observation)
  conv_weights = {name for name in params if 'residual_conv_torso' in name and
                  ('/conv_' in name or '/stem_' in name)}
  assert conv_weights
  assert any('/norm_' in name for name in params)  # Normalised residual blocks.
  rng = np.random.default_rng(0)
  observation = jax.tree.map(
      lambda s: rng.integers(0, 255, (2,) + s.shape).astype(s.dtype), observation_spec)
  policy = networks.imitation.policy.apply
  action = policy(params, observation)
  assert action.shape == (2, 3) and np.all(np.abs(action) <= 2.0)

  def with_pixels(part, pixels):
    return {**observation, part: {**observation[part], 'pixels': pixels}}

  # The action reads the observation's pixels and the goal's pixels; features alone
  # (unchanged here) would give the same action.
  for part in ('observation', 'goal'):
    pixels = observation[part]['pixels']
    moved = policy(params, with_pixels(part, 255 - pixels))
    assert np.all(np.abs(moved - action).max(axis=-1) > 1e-6), part
  # The task policy ignores the goal, pixels included.
  task_params = networks.task.policy.init(jax.random.PRNGKey(0), dummy_observation)
  np.testing.assert_array_equal(
      networks.task.policy.apply(task_params, observation),
      networks.task.policy.apply(task_params, with_pixels('goal', 255 - observation[
          'goal']['pixels'])))
  # Gradients reach every conv weight, through the policy and through the critic.
  grads = jax.grad(lambda p: policy(p, observation).sum())(params)
  critic_params = networks.imitation.critic.init(jax.random.PRNGKey(1), dummy_observation,
                                                 np.zeros((1, 3), np.float32))
  critic_grads = jax.grad(lambda p: networks.imitation.critic.apply(
      p, observation, action).sum())(critic_params)
  for name in conv_weights:
    assert np.abs(grads[name]['w']).max() > 0, name
    assert np.abs(critic_grads[name]['w']).max() > 0, name
