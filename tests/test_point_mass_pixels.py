"""The point mass seen from pixels: camera frames, the pixel reward, demos, training."""

import dataclasses

from acme import specs
import jax
import numpy as np
import pytest

from metamimic_jax import builder as builder_lib
from metamimic_jax import demo_sets
from metamimic_jax import demonstrators
from metamimic_jax import networks as networks_lib
from metamimic_jax import rewards
from metamimic_jax import training
from metamimic_jax.config import MetaMimicConfig
from tests.core.synthetic import TINY_CONFIG
from metamimic_jax.environments import base
from metamimic_jax.environments import make_domain
from metamimic_jax.environments import point_mass

SIZE = point_mass.IMAGE_SIZE


def _place(environment, x, y):
  """Puts the mass at rest at (x, y); returns the observation there."""
  physics = environment.physics
  physics.named.data.qpos[:] = [x, y]
  physics.named.data.qvel[:] = 0
  physics.forward()
  return environment.observation()


def _pixel_group(domain):
  (group,) = [g for g in domain.default_reward_groups if point_mass.PIXELS in g.keys]
  return group


def test_pixels_are_a_uint8_frame_that_follows_the_mass():
  domain = make_domain('point_mass_pixels')
  environment = domain.make_environment(0)
  spec = environment.observation_spec()[point_mass.PIXELS]
  assert spec.shape == (SIZE, SIZE, 3) and spec.dtype == np.uint8
  timestep = environment.reset()
  assert timestep.observation[point_mass.PIXELS].shape == (SIZE, SIZE, 3)
  assert timestep.observation[point_mass.PIXELS].dtype == np.uint8
  left = _place(environment, -0.15, 0.0)[point_mass.PIXELS]
  right = _place(environment, 0.15, 0.0)[point_mass.PIXELS]
  # The camera looks straight down: x grows along the image's columns. The frames differ
  # only where the mass was or is: near column (x + 0.3) / 0.6 * SIZE (8 and 24 of 32).
  changed_columns = np.flatnonzero(np.any(left != right, axis=(0, 2)))
  assert changed_columns.size
  for x in (-0.15, 0.15):
    column = (x + 0.3) / 0.6 * SIZE
    assert np.any(np.abs(changed_columns - column) <= 3), changed_columns
  assert np.all(np.abs(changed_columns - SIZE / 2) > 3)  # The middle did not change.
  # A step renders the new state, and features stay float32.
  timestep = environment.step(np.ones(2, np.float32))
  assert timestep.observation['position'].dtype == np.float32
  assert not np.array_equal(timestep.observation[point_mass.PIXELS], right)


def test_pixel_reward_is_one_for_the_same_frame_and_falls_as_the_mass_moves():
  domain = make_domain('point_mass_pixels')
  group = _pixel_group(domain)
  assert group.scale == point_mass.PIXEL_SCALE / SIZE**2
  pixel_reward = lambda o, d: rewards.imitation_reward_numpy(
      {point_mass.PIXELS: o}, {point_mass.PIXELS: d}, [group]) / group.weight
  # By hand: one channel of one pixel off by 255 is a squared distance of 1.
  black = np.zeros((SIZE, SIZE, 3), np.uint8)
  dot = black.copy()
  dot[5, 7, 1] = 255
  np.testing.assert_allclose(pixel_reward(dot, black), np.exp(-group.scale), rtol=1e-6)
  np.testing.assert_allclose(pixel_reward(dot, dot), 1.0)
  # Rendered: the same state gives 1; moving the mass 1, 2, 5 cm lowers it in turn.
  environment = domain.make_environment(0)
  environment.reset()
  frame = lambda dx: _place(environment, 0.1 + dx, -0.05)[point_mass.PIXELS]
  reference = frame(0.0)
  np.testing.assert_allclose(pixel_reward(frame(0.0), reference), 1.0)
  moved = [pixel_reward(frame(dx), reference) for dx in (0.01, 0.02, 0.05)]
  assert 1.0 > moved[0] > moved[1] > moved[2], moved


@pytest.fixture(scope='module', name='demo')
def _demo():
  return demonstrators.record_demonstration(make_domain('point_mass_pixels'), 0)


def test_demos_carry_frames_and_the_goal_is_the_demo_frames_pixels(demo):
  domain = make_domain('point_mass_pixels')
  assert demo.observations[point_mass.PIXELS].shape == (demo.length, SIZE, SIZE, 3)
  environment = base.DemoConditionedEnvironment(
      domain, [demo], domain.default_reward_groups, domain.default_goal_keys)
  timestep = environment.reset()
  assert set(timestep.observation['goal']) == {point_mass.PIXELS}
  np.testing.assert_array_equal(timestep.observation['observation'][point_mass.PIXELS],
                                demo.observations[point_mass.PIXELS][0])
  np.testing.assert_array_equal(timestep.observation['goal'][point_mass.PIXELS][0],
                                demo.observations[point_mass.PIXELS][1])
  # Replaying the demonstrator reproduces every frame: reward 1 every step.
  demonstrator = demonstrators.make_demonstrator(domain, demo.seed,
                                                 environment.environment)
  timesteps = base.run_episode(
      environment, lambda ts: demonstrator(base.raw_timestep(ts)), first=timestep)
  np.testing.assert_allclose([ts.reward['imitation'] for ts in timesteps[1:]], 1.0,
                             rtol=1e-6)


def test_the_builder_shows_the_domains_goal_keys_unless_the_config_names_some(demo):
  domain = make_domain('point_mass_pixels')
  default = builder_lib.MetaMimicBuilder(TINY_CONFIG, domain)
  goal = default.make_demo_environment([demo], seed=0).observation_spec()['goal']
  assert set(goal) == {point_mass.PIXELS}
  named = builder_lib.MetaMimicBuilder(
      dataclasses.replace(TINY_CONFIG, goal_keys=('position', 'pixels')), domain)
  goal = named.make_demo_environment([demo], seed=0).observation_spec()['goal']
  assert set(goal) == {'position', point_mass.PIXELS}
  features = builder_lib.MetaMimicBuilder(TINY_CONFIG, make_domain('point_mass'))
  demos = [demonstrators.record_demonstration(make_domain('point_mass'), 0)]
  goal = features.make_demo_environment(demos, seed=0).observation_spec()['goal']
  assert set(goal) == {'position', 'velocity'}  # No default: every observation key.


def test_a_privileged_critic_gets_the_demo_features_the_policy_does_not_read(demo):
  builder = builder_lib.MetaMimicBuilder(
      dataclasses.replace(TINY_CONFIG, privileged_critic=True),
      make_domain('point_mass_pixels'))
  environment = builder.make_demo_environment([demo], seed=0)
  assert set(environment.observation_spec()['goal']) == {'position', 'velocity',
                                                          point_mass.PIXELS}
  spec = specs.make_environment_spec(environment)
  networks = builder.make_networks(spec).imitation
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  policy_params = networks.policy.init(jax.random.PRNGKey(0), dummy_observation)
  critic_params = networks.critic.init(jax.random.PRNGKey(0), dummy_observation,
                                       dummy_action)
  observation = jax.tree.map(lambda x: x[None],
                             environment.reset().observation)
  elsewhere = {**observation, 'goal': {**observation['goal'],
                                       'position': observation['goal']['position'] + 0.1}}
  np.testing.assert_array_equal(networks.policy.apply(policy_params, observation),
                                networks.policy.apply(policy_params, elsewhere))
  assert not np.allclose(networks.critic.apply(critic_params, observation, dummy_action),
                         networks.critic.apply(critic_params, elsewhere, dummy_action))


@pytest.mark.slow
def test_a_tiny_training_run_imitates_from_pixels_end_to_end(tmp_path):
  config = MetaMimicConfig(batch_size=8, min_replay_size=50, policy_layer_sizes=(16,),
                           critic_layer_sizes=(16,), conv_channels=(8, 8),
                           samples_per_insert=8.0, train_task_policy=False)
  settings = training.TrainSettings(
      domain='point_mass_pixels', workdir=str(tmp_path), num_demos=6,
      held_out_fraction=0.3, num_demo_workers=1, max_env_steps=300,
      eval_every_env_steps=300, seed=0)
  results = training.run(settings, config)
  assert 0.0 <= results['imitation_reward'] <= 1.0
  assert results['actor_steps'] >= 300 and results['learner_steps'] > 0
  train, held_out = demo_sets.load(make_domain('point_mass_pixels'),
                                   str(tmp_path / 'demos'))
  assert train and held_out
  assert held_out[0].observations[point_mass.PIXELS].dtype == np.uint8
