"""The task-policy experiment's baseline: D4PG on the task reward alone, no demos."""

import dataclasses
import os

from acme import specs
import jax
import numpy as np
import reverb

from metamimic_jax import demonstrators
from metamimic_jax import plotting
from metamimic_jax import saved_runs
from metamimic_jax import training
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.environments import base
from metamimic_jax.environments import make_domain
from tests import helpers


def test_task_only_replay_holds_task_reward_transitions_and_the_learner_trains_on_them():
  config = dataclasses.replace(helpers.TINY_CONFIG, n_step=2, discount=0.5)
  domain = make_domain('point_mass')
  builder = MetaMimicBuilder(config, domain, task_only=True)
  environment = builder.make_training_environment((), seed=3)
  spec = specs.make_environment_spec(environment)
  assert set(spec.observations) == {'observation'} and set(spec.rewards) == {'task'}
  server = reverb.Server(builder.make_replay_tables(spec, enforce_samples_per_insert=False),
                         port=None)
  try:
    address = f'localhost:{server.port}'
    adder = builder.make_adder(reverb.Client(address), spec)
    # The demonstrator reaches the target, so the episode pays task rewards.
    demonstrator = demonstrators.make_demonstrator(domain, 3, environment.environment)
    timesteps = [environment.reset()]
    adder.add_first(timesteps[0])
    while not timesteps[-1].last():
      action = demonstrator(base.raw_timestep(timesteps[-1]))
      timesteps.append(environment.step(action))
      adder.add(action, timesteps[-1])
    task_rewards = np.array([ts.reward['task'] for ts in timesteps[1:]])
    assert task_rewards.any()
    client = reverb.Client(address)
    adder.reset()  # Flushes the writer.
    size = client.server_info()[config.replay_table_name].current_size
    assert size >= len(task_rewards)  # A transition a step (+ Acme's short ones).
    layout = builder.make_transition_layout(spec)
    sampled_rewards = []
    for item in client.sample(config.replay_table_name, 3 * size, emit_timesteps=False,
                              unpack_as_table_signature=True):
      transition = helpers.one_transition(layout, item.data)
      assert set(transition.reward) == {'task'} and 'goal' not in transition.observation
      # Identify the step by the observation: the point mass's exact position.
      position = transition.observation['observation']['position']
      t = next(i for i, ts in enumerate(timesteps)
               if np.array_equal(ts.observation['observation']['position'], position))
      # k-step returns r_t+1 + 0.5 r_t+2 + ..., k <= 2 read from the discount 0.5^(k-1).
      steps = 1 + int(round(np.log(transition.discount['task']) / np.log(0.5)))
      assert steps in (1, 2)
      expected = sum(0.5 ** i * task_rewards[t + i] for i in range(steps))
      assert transition.reward['task'] == np.float32(expected), t
      sampled_rewards.append(expected)
    assert any(sampled_rewards)  # Items with task rewards among those sampled.

    networks = builder.make_networks(spec)
    learner = builder.make_learner(jax.random.PRNGKey(0), networks,
                                   builder.make_dataset_iterator(address, spec), spec)
    before = learner.save()
    assert before.imitation is None
    for _ in range(3):
      learner.step()
    after = learner.save()
    assert int(after.steps) == 3 and after.imitation is None
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                           before.task.critic_params, after.task.critic_params)
    assert all(jax.tree.leaves(changed))
  finally:
    server.stop()


def test_task_only_training_run_checkpoints_a_task_policy_only(tmp_path):
  training.run(training.TrainSettings(
      workdir=str(tmp_path), agent='task_only', max_env_steps=30,
      eval_every_env_steps=30, num_task_eval_episodes=1), helpers.TINY_CONFIG)
  assert not os.path.exists(tmp_path / 'demos')  # No demonstrations recorded.
  evaluations = plotting.read_csv(os.path.join(tmp_path, 'logs', 'evaluator', 'logs.csv'))
  assert 'task_success' in evaluations and 'imitation_reward' not in evaluations
  assert evaluations['learner_steps'][-1] > 0
  run = saved_runs.open_run(str(tmp_path))
  assert run.builder.task_only
  environment = run.builder.make_training_environment((), seed=0)
  policies = saved_runs.restore_policies(run, specs.make_environment_spec(environment))
  assert list(policies) == ['task']
