import dataclasses

from acme import environment_loop
import jax
import numpy as np
import pytest
import reverb

from metamimic_jax.rewards import imitation_reward
from tests import helpers


class _RecordActions:
  """Wraps an actor and remembers the actions it chose and where."""

  def __init__(self, actor):
    self._actor = actor
    self.actions = []
    self.observations = []  # Positions the actions were chosen at.

  def __getattr__(self, name):
    return getattr(self._actor, name)

  def select_action(self, observation):
    action = self._actor.select_action(observation)
    self.actions.append(action)
    self.observations.append(observation['observation']['position'])
    return action


@pytest.fixture(name='replay')
def _replay():
  config = dataclasses.replace(helpers.TINY_CONFIG, n_step=1)
  builder, environment, spec = helpers.point_mass_setup(config)
  server = reverb.Server(builder.make_replay_tables(spec, False), port=None)
  yield builder, environment, spec, server
  server.stop()


def test_actor_writes_the_transitions_it_experiences(replay):
  builder, environment, spec, server = replay
  client = reverb.Client(f'localhost:{server.port}')
  networks = builder.make_networks(spec)
  actor = _RecordActions(builder.make_actor(
      jax.random.PRNGKey(0), networks, spec, helpers.PolicyParams(networks, spec),
      adder=builder.make_adder(client, spec)))
  environment.select_demonstration(1)
  environment_loop.EnvironmentLoop(environment, actor).run(num_episodes=1)
  demo = helpers.point_mass_demos()[1]
  steps = demo.length - 1
  table = builder.config.replay_table_name
  assert client.server_info()[table].current_size == steps
  samples = client.sample(table, num_samples=3000, emit_timesteps=False,
                          unpack_as_table_signature=True)
  layout = builder.make_transition_layout(spec)
  items = list({sample.info.key: helpers.one_transition(layout, sample.data)
                for sample in samples}.values())
  assert len(items) == steps  # 3000 uniform draws see all 99 items.
  frames = np.concatenate([demo.observations['position'],
                           demo.observations['velocity']], axis=1)
  groups = builder.reward_groups
  actions, observations = np.stack(actor.actions), np.stack(actor.observations)
  assert len(actions) == steps
  assert len(np.unique(actions, axis=0)) == steps  # Noisy: no two steps alike.
  seen_steps = []
  for item in items:
    goal = item.observation['goal']
    goal_frame = np.concatenate([goal['position'][0], goal['velocity'][0]])
    # The item's step t starts at o_t and shows the goal d_t+1: one frame matches.
    t, = np.flatnonzero(np.all(frames == goal_frame, axis=1)) - 1
    seen_steps.append(t)
    np.testing.assert_array_equal(item.action, actions[t])  # Chosen at that very step.
    np.testing.assert_array_equal(item.observation['observation']['position'],
                                  observations[t])
    target = {k: frames_k[t + 1] for k, frames_k in demo.observations.items()}
    expected = imitation_reward(item.next_observation['observation'], target, groups)
    np.testing.assert_allclose(item.reward['imitation'], expected, rtol=1e-5)
    reached = np.linalg.norm(item.next_observation['observation']['position']) < 0.02
    assert item.reward['task'] == float(reached)  # Sparse: at the target or not.
  # The demonstration's end is a time limit: every item bootstraps (n_step 1: discount 1).
  assert all(item.discount[key] == 1.0 for item in items for key in ('imitation', 'task'))
  assert sorted(seen_steps) == list(range(steps))  # One item per step, from o_0 on.


def test_exploration_noise_and_evaluation_policy(replay):
  builder, environment, spec, _ = replay
  networks = builder.make_networks(spec)
  source = helpers.PolicyParams(networks, spec)
  observation = environment.reset().observation
  greedy = builder.make_actor(jax.random.PRNGKey(0), networks, spec, source, sigma=0)
  noisy = builder.make_actor(jax.random.PRNGKey(0), networks, spec, source, sigma=0.5)
  greedy_actions = np.stack([greedy.select_action(observation) for _ in range(20)])
  noisy_actions = np.stack([noisy.select_action(observation) for _ in range(20)])
  np.testing.assert_array_equal(greedy_actions, greedy_actions[:1].repeat(20, 0))
  assert noisy_actions.std(axis=0).min() > 0.1
  assert np.all(np.abs(noisy_actions) <= 1.0)
  with pytest.raises(ValueError, match='policy must be'):
    builder.make_actor(jax.random.PRNGKey(0), networks, spec, source, policy='other')


def test_each_episode_draws_its_sigma_from_the_configured_range(replay):
  """With episode_min_sigma, an episode's noise has the sigma drawn at its start."""
  _, environment, spec, _ = replay
  config = dataclasses.replace(helpers.TINY_CONFIG, sigma=0.8, episode_min_sigma=0.05)
  builder, _, _ = helpers.point_mass_setup(config)
  networks = builder.make_networks(spec)
  source = helpers.PolicyParams(networks, spec)
  actor = builder.make_actor(jax.random.PRNGKey(0), networks, spec, source)
  greedy = builder.make_actor(jax.random.PRNGKey(0), networks, spec, source, sigma=0)
  timestep = environment.reset()
  clean = greedy.select_action(timestep.observation)
  sigmas, spreads = [], []
  for _ in range(200):
    actor.observe_first(timestep)
    actions = np.stack([actor.select_action(timestep.observation) for _ in range(50)])
    sigmas.append(actor.sigma)
    # Noise well inside the bounds: its std in half-ranges is the episode's sigma.
    inside = np.abs(actions) < 0.999
    spreads.append(np.sqrt(np.mean(np.where(inside, actions - clean, 0) ** 2) /
                           np.mean(inside)))
  sigmas = np.array(sigmas)
  assert np.all((sigmas >= 0.05) & (sigmas <= 0.8))
  # Log-uniform: log(sigma) is uniform on [log 0.05, log 0.8], so its quartiles split
  # that interval evenly (a uniform draw would put most sigmas above 0.4).
  quartiles = np.quantile(np.log(sigmas), [0.25, 0.5, 0.75])
  np.testing.assert_allclose(quartiles, np.log(0.05) + np.log(16) * np.array(
      [0.25, 0.5, 0.75]), atol=0.25)
  small = sigmas < 0.15
  assert np.all(np.abs(np.array(spreads)[small] / sigmas[small] - 1) < 0.3)
  # A sigma given to the builder is used for every episode (evaluation, actor ladders).
  fixed = builder.make_actor(jax.random.PRNGKey(0), networks, spec, source, sigma=0.3)
  for _ in range(3):
    fixed.observe_first(timestep)
    assert fixed.sigma == 0.3
  with pytest.raises(ValueError, match=r'episode_min_sigma must lie in \(0, sigma 0.3\]'):
    dataclasses.replace(helpers.TINY_CONFIG, sigma=0.3, episode_min_sigma=0.5)


def test_task_actor_acts_on_task_and_demo_observations(replay):
  """The task policy reads only the observation, in either environment."""
  builder, environment, spec, _ = replay
  networks = builder.make_networks(spec)
  source = helpers.PolicyParams(networks, spec)
  actor = builder.make_actor(jax.random.PRNGKey(0), networks, spec, source,
                             policy='task', sigma=0)
  task_observation = builder.make_task_environment(seed=0).reset().observation
  demo_observation = environment.reset().observation
  assert set(task_observation) == {'observation'}
  expected = networks.task.policy.apply(
      source.state.task.policy_params,
      jax.tree.map(lambda x: np.asarray(x)[None], task_observation))[0]
  np.testing.assert_allclose(actor.select_action(task_observation), expected, atol=1e-6)
  same_state = {'observation': task_observation['observation'],
                'goal': demo_observation['goal']}
  np.testing.assert_allclose(actor.select_action(same_state), expected, atol=1e-6)
