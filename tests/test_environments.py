import dataclasses

import numpy as np
import pytest

from metamimic_jax.config import FeatureGroup
from metamimic_jax.environments import base
from metamimic_jax.environments import make_domain
from metamimic_jax.environments import point_mass
from tests import helpers


def test_reset_restores_the_demo_and_goal_is_the_next_frames():
  demos = helpers.point_mass_demos()
  domain = make_domain('point_mass')
  environment = base.DemoConditionedEnvironment(
      domain, demos, domain.default_reward_groups, goal_horizon=3)
  environment.select_demonstration(2)
  timestep = environment.reset()
  demo = demos[2]
  for key, value in timestep.observation['observation'].items():
    np.testing.assert_array_equal(value, demo.observations[key][0])
  np.testing.assert_array_equal(timestep.observation['goal']['position'],
                                demo.observations['position'][1:4])
  steps = 0
  while not timestep.last():
    timestep = environment.step(np.zeros(2, np.float32))
    steps += 1
  assert steps == demo.length - 1
  assert timestep.discount == 0.0  # The demonstration's end terminates the episode.
  last = demo.observations['position'][-1]
  np.testing.assert_array_equal(timestep.observation['goal']['position'],
                                np.stack([last] * 3))  # Repeats past the end.


def test_replaying_the_demonstrator_scores_one_per_step():
  """The demonstrator is deterministic per seed: re-running it imitates perfectly."""
  domain = make_domain('point_mass')
  demo = base.record_demonstration(domain, seed=7)
  environment = base.DemoConditionedEnvironment(domain, [demo],
                                                domain.default_reward_groups)
  demonstrator = domain.make_demonstrator(7)
  timestep = environment.reset()
  raw = timestep._replace(observation=timestep.observation['observation'])
  demonstrator.reset(raw)
  rewards, task = [], []
  while not timestep.last():
    timestep = environment.step(demonstrator.step(raw))
    raw = timestep._replace(observation=timestep.observation['observation'])
    rewards.append(timestep.reward['imitation'])
    task.append(timestep.reward['task'])
  np.testing.assert_allclose(rewards, 1.0, atol=1e-5)
  np.testing.assert_array_equal(task, demo.task_rewards)


def test_zero_action_scores_far_below_the_demonstrator():
  domain = make_domain('point_mass')
  environment = base.DemoConditionedEnvironment(
      domain, helpers.point_mass_demos(), domain.default_reward_groups)
  rewards = []
  for _ in range(4):
    timestep = environment.reset()
    while not timestep.last():
      timestep = environment.step(np.zeros(2, np.float32))
      rewards.append(timestep.reward['imitation'])
  assert 0 <= np.mean(rewards) < 0.2


def test_unknown_reward_keys_are_refused():
  domain = make_domain('point_mass')
  with pytest.raises(ValueError, match='not observations'):
    base.DemoConditionedEnvironment(domain, helpers.point_mass_demos(),
                                    (FeatureGroup(('elbow',), 1.0, 1.0),))


def test_demos_of_another_shape_are_refused():
  domain = make_domain('point_mass')
  demo = helpers.point_mass_demos()[0]
  bad = dataclasses.replace(demo, observations=dict(
      demo.observations, position=demo.observations['position'][:, :1]))
  with pytest.raises(ValueError, match='position'):
    base.DemoConditionedEnvironment(domain, [bad], domain.default_reward_groups)


def test_task_environment_and_unknown_domain():
  environment = base.TaskEnvironment(make_domain('point_mass'), seed=0)
  timestep = environment.reset()
  assert set(timestep.observation) == {'observation'}
  physics = environment.environment.physics
  radius = point_mass.TARGET_RADIUS
  # The mass placed at rest at, near, just outside and far from the target (the origin).
  for x, reward in ((0.0, 1.0), (0.75 * radius, 1.0), (1.25 * radius, 0.0), (0.2, 0.0)):
    with physics.reset_context():
      physics.data.qpos[:] = [x, 0.0]
      physics.data.qvel[:] = 0.0
    timestep = environment.step(np.zeros(2, np.float32))
    assert timestep.reward == reward, x
  with pytest.raises(ValueError, match='unknown domain'):
    make_domain('cartpole')
