"""Batched acting: an ActorBatch acts as single actors would, and its loop counts,
logs and writes every environment's episodes."""

import dataclasses

from acme import environment_loop
import dm_env
import jax
import numpy as np
import reverb

from metamimic_jax import batched_loop
from tests import helpers


def _transitions(client, table, layout):
  """Every transition in the (FIFO) table as one flat float64 array each, in a fixed
  order."""
  size = client.server_info()[table].current_size
  samples = client.sample(table, num_samples=size, emit_timesteps=False,
                          unpack_as_table_signature=True)
  transitions = [helpers.flat_transition(transition) for sample in samples
                 for transition in helpers.item_transitions(layout, sample.data)]
  return sorted(transitions, key=lambda transition: tuple(np.round(transition, 4)))


def test_a_batch_of_actors_writes_what_single_actors_write():
  """Two environments acting together leave the transitions two single actors with the
  same keys, seeds and noise leave: the same actions, returns and observations."""
  config = dataclasses.replace(helpers.TINY_CONFIG, n_step=3)
  builder, _, spec = helpers.point_mass_setup(config)
  networks = builder.make_networks(spec)
  source = helpers.PolicyParams(networks, spec)
  demos = helpers.point_mass_demos(4)
  keys = jax.random.split(jax.random.PRNGKey(7), 2)
  table = config.replay_table_name
  layout = builder.make_transition_layout(spec)
  episodes = 3

  def serve():
    return reverb.Server([reverb.Table.queue(table, 10_000, signature=layout.signature())],
                         port=None)

  single_server = serve()
  single = reverb.Client(f'localhost:{single_server.port}')
  for i, key in enumerate(keys):
    actor = builder.make_actor(key, networks, spec, source, sigma=0.3,
                               adder=builder.make_adder(single, spec))
    environment_loop.EnvironmentLoop(builder.make_demo_environment(demos, seed=i),
                                     actor).run(num_episodes=episodes)

  batch_server = serve()
  batch = reverb.Client(f'localhost:{batch_server.port}')
  adder = builder.make_adder(batch, spec, num_environments=2)
  actors = builder.make_actor_batch(keys, networks, spec, source, adder, sigma=0.3)
  loop = batched_loop.BatchedEnvironmentLoop(
      [builder.make_demo_environment(demos, seed=i) for i in range(2)], actors)
  finished = 0
  while finished < 2 * episodes:  # Equal lengths: both environments end together.
    finished += len(loop.run_until_episode_end())
  adder.reset()  # Writes the last items and waits until they are in the table.
  adder.close()

  expected = _transitions(single, table, layout)
  # A transition a step, and n - 1 shorter ones at each episode's end.
  assert len(expected) == 2 * episodes * (demos[0].length - 1 + config.n_step - 1)
  num_items = batch.server_info()[table].current_size
  got = _transitions(batch, table, layout)
  assert num_items == len(expected) // 2  # An item holds one from each environment.
  assert len(got) == len(expected)
  # A batched policy call may differ from a single one in a float32 action's last bits.
  np.testing.assert_allclose(np.stack(got), np.stack(expected), rtol=1e-5, atol=1e-6)
  single_server.stop()
  batch_server.stop()


class _Countdown(dm_env.Environment):
  """Episodes of `length` steps; reward {'r': the action}, observation the step."""

  def __init__(self, length):
    self._length = length
    self._t = 0
    self.resets = 0

  def reset(self):
    self._t = 0
    self.resets += 1
    return dm_env.restart(np.float32(0))

  def step(self, action):
    self._t += 1
    reward = {'r': np.float32(action)}
    if self._t == self._length:
      return dm_env.truncation(reward, np.float32(self._t))
    return dm_env.transition(reward, np.float32(self._t))

  def observation_spec(self):
    raise NotImplementedError

  def action_spec(self):
    raise NotImplementedError


class _ConstantBatch:
  """An actor batch of fixed actions, recording what it is shown."""

  def __init__(self, actions):
    self._actions = actions
    self.firsts, self.observed, self.updates = [], [], 0

  def __len__(self):
    return len(self._actions)

  def select_actions(self, observations):
    assert len(observations) == len(self._actions)
    return list(self._actions)

  def observe_first(self, index, timestep):
    assert timestep.first()
    self.firsts.append(index)

  def observe_all(self, actions, timesteps):
    assert len(actions) == len(timesteps) == len(self._actions)
    self.observed.extend((index, float(timestep.observation))
                         for index, timestep in enumerate(timesteps))

  def update(self):
    self.updates += 1


def test_the_loop_counts_and_logs_each_environment_s_episodes():
  environments = [_Countdown(2), _Countdown(3), _Countdown(5)]
  actor = _ConstantBatch([1.0, 2.0, 3.0])
  logged = []

  class Logger:
    def write(self, data):
      logged.append(data)

  loop = batched_loop.BatchedEnvironmentLoop(environments, actor, logger=Logger())
  first = loop.run_until_episode_end()
  assert [r['episode_length'] for r in first] == [2]  # The 2-step episode ends first.
  loop.run(num_steps=3 * 28)  # 30 steps of each, in all.
  # Each environment resets when its own episode ends: 15, 10 and 6 episodes.
  assert [e.resets for e in environments] == [16, 11, 7]
  assert actor.updates == 30
  lengths = [r['episode_length'] for r in logged]
  returns = [r['episode_return']['r'] for r in logged]
  assert sorted(set(zip(lengths, returns))) == [(2, 2.0), (3, 6.0), (5, 15.0)]
  assert lengths.count(2) == 15 and lengths.count(3) == 10 and lengths.count(5) == 6
  assert logged[-1]['episodes'] == len(logged) == 31
  assert logged[-1]['steps'] == 15 * 2 + 10 * 3 + 6 * 5
  # Every step of every environment is observed, in step order within an environment.
  for index, length in enumerate((2, 3, 5)):
    seen = [t for i, t in actor.observed if i == index]
    assert seen == [float(1 + k % length) for k in range(30)]
