"""Domains by name, the episode loop, and the demo-conditioned and task environments."""

import dataclasses
import os
import subprocess
import sys

import dm_env
import numpy as np
import pytest

from metamimic_jax import demonstrators
from metamimic_jax.config import FeatureGroup
from metamimic_jax.environments import base
from metamimic_jax.environments import make_domain
from metamimic_jax.environments import point_mass
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  assert timestep.discount == 1.0  # The demonstration's end is a time limit.
  last = demo.observations['position'][-1]
  np.testing.assert_array_equal(timestep.observation['goal']['position'],
                                np.stack([last] * 3))  # Repeats past the end.


def test_action_repeat_holds_each_action_and_averages_the_frames_rewards():
  demos = helpers.point_mass_demos()
  domain = make_domain('point_mass')
  groups = domain.default_reward_groups
  every_frame = base.DemoConditionedEnvironment(domain, demos, groups, seed=0)
  repeated = base.DemoConditionedEnvironment(domain, demos, groups, goal_horizon=2,
                                             seed=0, action_repeat=3)
  demo = demos[1]
  positions = demo.observations['position']
  for environment in (every_frame, repeated):
    environment.select_demonstration(1)
  first = repeated.reset()
  every_frame.reset()
  assert repeated.frame == 0
  # The goal is the demonstration at the next two decisions: frames 3 and 6.
  np.testing.assert_array_equal(first.observation['goal']['position'], positions[[3, 6]])
  rng = np.random.default_rng(0)
  frame_rewards, step_rewards, steps = [], [], []
  timestep = first
  while not timestep.last():
    action = rng.uniform(-1, 1, 2).astype(np.float32)
    timestep = repeated.step(action)
    steps.append(timestep)
    held = []
    for _ in range(3):
      frame = every_frame.step(action)
      held.append(frame.reward['imitation'])
      if frame.last():
        break
    frame_rewards += held
    step_rewards.append(np.mean(held))
    assert repeated.frame == every_frame.frame == len(frame_rewards)
    # Both environments are at the same frame, so they observe the same state.
    np.testing.assert_array_equal(timestep.observation['observation']['position'],
                                  frame.observation['observation']['position'])
  assert frame.last() and len(frame_rewards) == demo.length - 1
  assert len(steps) == -(-(demo.length - 1) // 3)  # The last step may hold fewer frames.
  np.testing.assert_allclose([ts.reward['imitation'] for ts in steps], step_rewards,
                             rtol=1e-6)
  f = 3 * (len(steps) - 1)  # The frame after the step before the last.
  np.testing.assert_array_equal(
      steps[-2].observation['goal']['position'],
      positions[[min(f + 3, demo.length - 1), min(f + 6, demo.length - 1)]])


def test_replaying_the_demonstrator_scores_one_per_step():
  """The demonstrator is deterministic per seed: re-running it imitates perfectly."""
  domain = make_domain('point_mass')
  demo = demonstrators.record_demonstration(domain, seed=7)
  environment = base.DemoConditionedEnvironment(domain, [demo],
                                                domain.default_reward_groups)
  demonstrator = demonstrators.make_demonstrator(domain, 7, environment.environment)
  timesteps = base.run_episode(environment,
                               lambda ts: demonstrator(base.raw_timestep(ts)))[1:]
  np.testing.assert_allclose([ts.reward['imitation'] for ts in timesteps], 1.0,
                             atol=1e-5)
  np.testing.assert_array_equal([ts.reward['task'] for ts in timesteps],
                                demo.task_rewards)


class _CountingEnvironment:
  """Observation t after t steps; the episode's last timestep comes after `length`."""

  def __init__(self, length):
    self._length = length
    self.t = 0

  def reset(self):
    self.t = 0
    return dm_env.restart(0)

  def step(self, action):
    self.t += action
    if self.t >= self._length:
      return dm_env.termination(0.0, self.t)
    return dm_env.transition(0.0, self.t)


def test_run_episode_stops_at_the_last_step_the_step_limit_or_when_told():
  one = lambda timestep: 1
  observations = lambda timesteps: [ts.observation for ts in timesteps]
  assert observations(base.run_episode(_CountingEnvironment(3), one)) == [0, 1, 2, 3]
  assert observations(base.run_episode(_CountingEnvironment(9), one,
                                       max_steps=2)) == [0, 1, 2]
  environment = _CountingEnvironment(9)
  assert observations(base.run_episode(
      environment, one, stop=lambda: environment.t == 4)) == [0, 1, 2, 3, 4]
  first = dm_env.restart(5)  # Continues from a given first timestep without a reset.
  environment.t = 5
  assert observations(base.run_episode(environment, one, first=first)) == [5, 6, 7, 8, 9]


def test_environments_never_import_demonstrators():
  """Layers point one way: demonstrators use environments, never the reverse."""
  code = ('import sys; import metamimic_jax.environments.jaco, '
          'metamimic_jax.environments.point_mass; '
          'from metamimic_jax.environments import make_domain; '
          'make_domain("jaco_stack").make_environment(0); '
          'make_domain("point_mass").make_environment(0); '
          'print(sorted(m for m in sys.modules if "demonstrators" in m))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, check=True, cwd=ROOT)
  assert result.stdout.strip() == '[]'


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


def test_demonstrator_registry():
  domain = make_domain('point_mass')
  demonstrator = demonstrators.make_demonstrator(domain, 3, domain.make_environment(3))
  assert isinstance(demonstrator, demonstrators.Demonstrator)

  class Cartpole(type(domain)):
    name = 'cartpole'

  with pytest.raises(ValueError, match="no demonstrator for domain 'cartpole'; "
                                       'domains with one: point_mass, point_mass_pixels, '
                                       'jaco_stack'):
    demonstrators.make_demonstrator(Cartpole(), 3, domain.make_environment(3))


def test_task_environment_action_repeat_steps_that_many_frames():
  domain = make_domain('point_mass')
  every_frame = base.TaskEnvironment(domain, seed=3)
  repeated = base.TaskEnvironment(domain, seed=3, action_repeat=2)
  every_frame.reset(), repeated.reset()
  action = np.array([0.5, -0.5], np.float32)
  for _ in range(4):
    held = repeated.step(action)
    frames = [every_frame.step(action) for _ in range(2)]
    np.testing.assert_array_equal(held.observation['observation']['position'],
                                  frames[-1].observation['observation']['position'])
    assert held.reward == np.float32(np.mean([f.reward for f in frames]))
