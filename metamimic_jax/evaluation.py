"""One-shot imitation and task evaluation."""

from typing import Dict, List, Optional, Sequence

from acme import core
import dm_env
import numpy as np

from metamimic_jax import keys
from metamimic_jax.environments import base


class ConstantActor(core.Actor):
  """Always takes the same action (zeros: a stationary arm); a baseline to compare with."""

  def __init__(self, action: np.ndarray):
    self._action = np.asarray(action, np.float32)

  def select_action(self, observation) -> np.ndarray:
    del observation
    return self._action

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    del timestep

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    del action, next_timestep

  def update(self, wait: bool = False) -> None:
    del wait


def actor_policy(actor: core.Actor) -> base.Policy:
  """The actor as a `base.run_episode` policy, acting without observing (no replays)."""
  return lambda timestep: actor.select_action(timestep.observation)


def scheduled_subset(round_index: int, num_items: int, subset_size: int,
                     full_every: int) -> Optional[List[int]]:
  """What evaluation round `round_index` (from 0) covers: None (all items) every
  `full_every`-th round; else the next `subset_size` item indices in turn, so the quick
  rounds sweep all items. The first round is quick: the untrained policy needs no more."""
  if (round_index + 1) % full_every == 0 or subset_size >= num_items:
    return None
  start = (round_index - (round_index + 1) // full_every) * subset_size
  return [(start + i) % num_items for i in range(subset_size)]


def evaluate_imitation(actor: core.Actor,
                       environment: base.DemoConditionedEnvironment,
                       demo_indices: Optional[Sequence[int]] = None) -> Dict[str, float]:
  """Imitates demonstrations once each (one shot, no noise): all, or `demo_indices`.

  Returns the mean per-step imitation reward (1.0 is a perfect copy) and its spread, the
  domain's per-step tracking errors in physical units (means over steps, then demos),
  the task return and success the imitations achieved, and the fraction of imitations
  that end in task success (for Jaco: bricks stacked at the last frame).
  """
  actor.update(wait=True)
  indices = range(environment.num_demonstrations) if demo_indices is None else demo_indices
  per_demo_reward, task_returns, final_success = [], [], []
  per_demo_errors: Dict[str, List[float]] = {}
  for index in indices:
    environment.select_demonstration(index)
    timesteps = base.run_episode(environment, actor_policy(actor))[1:]
    frames = environment.demonstration.observations
    # Step i ends at frame i k (k = action_repeat), or at the demonstration's end.
    frame_at = lambda i: min(i * environment.action_repeat,
                             environment.demonstration.length - 1)
    errors = [environment.domain.tracking_errors(
        ts.observation[keys.OBSERVATION], {k: v[frame_at(i)] for k, v in frames.items()})
              for i, ts in enumerate(timesteps, start=1)]
    for name in errors[0]:
      per_demo_errors.setdefault(name, []).append(np.mean([e[name] for e in errors]))
    per_demo_reward.append(np.mean([ts.reward[keys.IMITATION] for ts in timesteps]))
    task_returns.append(np.sum([ts.reward[keys.TASK] for ts in timesteps]))
    final_success.append(timesteps[-1].reward[keys.TASK] > 0)
  return {
      'imitation_reward': float(np.mean(per_demo_reward)),
      'imitation_reward_min': float(np.min(per_demo_reward)),
      'imitation_reward_std': float(np.std(per_demo_reward)),
      **{name: float(np.mean(values)) for name, values in per_demo_errors.items()},
      'imitation_task_return': float(np.mean(task_returns)),
      'imitation_task_success': float(np.mean(np.asarray(task_returns) > 0)),
      'imitation_final_task_success': float(np.mean(final_success)),
  }


def evaluate_task(actor: core.Actor, environment: base.TaskEnvironment,
                  num_episodes: int) -> Dict[str, float]:
  """The task policy on fresh episodes: return, success and frames to first success."""
  actor.update(wait=True)
  returns, steps_to_success = [], []
  for _ in range(num_episodes):
    rewards = [ts.reward for ts in base.run_episode(environment, actor_policy(actor))[1:]]
    returns.append(np.sum(rewards))
    hits = np.flatnonzero(np.asarray(rewards) > 0)
    if hits.size:
      steps_to_success.append((hits[0] + 1) * environment.action_repeat)
  return {
      'task_return': float(np.mean(returns)),
      'task_success': len(steps_to_success) / num_episodes,
      'task_steps_to_success': (float(np.mean(steps_to_success)) if steps_to_success
                                else float('nan')),
  }
