"""One-shot imitation and task evaluation."""

from typing import Dict

from acme import core
import numpy as np

from metamimic_jax import keys
from metamimic_jax.environments import base


def actor_policy(actor: core.Actor) -> base.Policy:
  """The actor as a `base.run_episode` policy, acting without observing (no replays)."""
  return lambda timestep: actor.select_action(timestep.observation)


def evaluate_imitation(actor: core.Actor,
                       environment: base.DemoConditionedEnvironment) -> Dict[str, float]:
  """Imitates each of the environment's demonstrations once (one shot, no noise).

  Returns the mean per-step imitation reward over all demos (1.0 is a perfect copy),
  its spread, and the task return and success the imitations achieved.
  """
  actor.update(wait=True)
  per_demo_reward, task_returns = [], []
  for index in range(environment.num_demonstrations):
    environment.select_demonstration(index)
    timesteps = base.run_episode(environment, actor_policy(actor))[1:]
    per_demo_reward.append(np.mean([ts.reward[keys.IMITATION] for ts in timesteps]))
    task_returns.append(np.sum([ts.reward[keys.TASK] for ts in timesteps]))
  return {
      'imitation_reward': float(np.mean(per_demo_reward)),
      'imitation_reward_min': float(np.min(per_demo_reward)),
      'imitation_reward_std': float(np.std(per_demo_reward)),
      'imitation_task_return': float(np.mean(task_returns)),
      'imitation_task_success': float(np.mean(np.asarray(task_returns) > 0)),
  }


def evaluate_task(actor: core.Actor, environment: base.TaskEnvironment,
                  num_episodes: int) -> Dict[str, float]:
  """The task policy on fresh episodes: return, success and steps to first success."""
  actor.update(wait=True)
  returns, steps_to_success = [], []
  for _ in range(num_episodes):
    rewards = [ts.reward for ts in base.run_episode(environment, actor_policy(actor))[1:]]
    returns.append(np.sum(rewards))
    hits = np.flatnonzero(np.asarray(rewards) > 0)
    if hits.size:
      steps_to_success.append(hits[0] + 1)
  return {
      'task_return': float(np.mean(returns)),
      'task_success': len(steps_to_success) / num_episodes,
      'task_steps_to_success': (float(np.mean(steps_to_success)) if steps_to_success
                                else float('nan')),
  }
