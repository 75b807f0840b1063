"""One-shot imitation and task evaluation."""

import dataclasses
from typing import Dict, List, Optional, Sequence

from acme import core
import dm_env
import numpy as np

from metamimic_jax import demonstrations
from metamimic_jax import keys
from metamimic_jax.environments import base


class EvaluationActor(core.Actor):
  """An actor that only acts: it keeps no replay and has no parameters to update."""

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    del timestep

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    del action, next_timestep

  def update(self, wait: bool = False) -> None:
    del wait


class ConstantActor(EvaluationActor):
  """Always takes the same action (zeros: a stationary arm); a baseline to compare with."""

  def __init__(self, action: np.ndarray):
    self._action = np.asarray(action, np.float32)

  def select_action(self, observation) -> np.ndarray:
    del observation
    return self._action


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


@dataclasses.dataclass(frozen=True)
class Imitation:
  """One one-shot imitation of one demonstration, step by step (steps 1 .. S: S = T-1
  frames, or fewer steps when each holds its action for several frames)."""
  demo_index: int
  imitation_rewards: np.ndarray  # [S]
  task_rewards: np.ndarray  # [S]
  tracking_errors: Dict[str, np.ndarray]  # The domain's errors, name -> [S].
  frame_indices: np.ndarray  # [S] the demo frame each step ends at (and is compared to).
  # The imitation's raw feature observations, [S + 1, ...] (images left out: memory).
  observations: Dict[str, np.ndarray]

  @property
  def reward(self) -> float:
    """The mean per-step imitation reward (1.0 is a perfect copy)."""
    return float(np.mean(self.imitation_rewards))


def imitate(actor: core.Actor, environment: base.DemoConditionedEnvironment,
            index: int) -> Imitation:
  """Imitates demonstration `index` once (no noise unless the actor adds it)."""
  environment.select_demonstration(index)
  timesteps = base.run_episode(environment, actor_policy(actor))
  observations = [ts.observation[keys.OBSERVATION] for ts in timesteps]
  features = {k: np.stack([o[k] for o in observations])
              for k, v in observations[0].items() if v.dtype != np.uint8}
  # Step i ends at frame i k (k = action_repeat), or at the demonstration's end.
  frame_indices = np.minimum(np.arange(1, len(observations)) * environment.action_repeat,
                             environment.demonstration.length - 1)
  return Imitation(
      demo_index=index,
      imitation_rewards=np.array([ts.reward[keys.IMITATION] for ts in timesteps[1:]]),
      task_rewards=np.array([ts.reward[keys.TASK] for ts in timesteps[1:]]),
      tracking_errors=_tracking_errors(environment.domain, features,
                                       environment.demonstration, frame_indices),
      frame_indices=frame_indices,
      observations=features)


def _tracking_errors(domain: base.Domain, observations: Dict[str, np.ndarray],
                     demo: demonstrations.Demonstration,
                     frame_indices: np.ndarray) -> Dict[str, np.ndarray]:
  """The domain's errors of observations[s] (features, [S + 1, ...]) against demo frame
  frame_indices[s - 1], for steps s = 1 .. S: name -> [S]."""
  errors = [domain.tracking_errors({k: v[step] for k, v in observations.items()},
                                   {k: v[f] for k, v in demo.observations.items()})
            for step, f in enumerate(frame_indices, start=1)]
  return {name: np.array([e[name] for e in errors]) for name in errors[0]}


def summarize_imitations(imitations: Sequence[Imitation]) -> Dict[str, float]:
  """The mean per-step imitation reward and its spread over demos, the tracking errors
  (means over steps, then demos), the task return and success the imitations achieved,
  and the fraction that end in task success (for Jaco: bricks stacked at the last frame).
  """
  rewards = [imitation.reward for imitation in imitations]
  task_returns = np.array([np.sum(imitation.task_rewards) for imitation in imitations])
  return {
      'imitation_reward': float(np.mean(rewards)),
      'imitation_reward_min': float(np.min(rewards)),
      'imitation_reward_std': float(np.std(rewards)),
      **{name: float(np.mean([np.mean(i.tracking_errors[name]) for i in imitations]))
         for name in imitations[0].tracking_errors},
      'imitation_task_return': float(np.mean(task_returns)),
      'imitation_task_success': float(np.mean(task_returns > 0)),
      'imitation_final_task_success': float(np.mean(
          [imitation.task_rewards[-1] > 0 for imitation in imitations])),
  }


def errors_by_phase(imitations: Sequence[Imitation],
                    num_phases: int = 10) -> Dict[str, np.ndarray]:
  """Each tracking error's mean over the steps of all imitations in each of `num_phases`
  equal stretches of their demos (by the demo frame a step ends at): where in a demo
  the error sits, e.g. before or after a grasp."""
  phases = np.concatenate([
      np.minimum(num_phases * i.frame_indices // i.frame_indices[-1], num_phases - 1)
      for i in imitations])
  if len(set(phases)) < num_phases:
    raise ValueError(f'the imitations have fewer steps than {num_phases} phases')
  by_phase = {}
  for name in imitations[0].tracking_errors:
    errors = np.concatenate([i.tracking_errors[name] for i in imitations])
    by_phase[name] = np.array([errors[phases == p].mean() for p in range(num_phases)])
  return by_phase


def errors_by_frame_offset(imitations: Sequence[Imitation],
                           environment: base.DemoConditionedEnvironment,
                           offsets: Sequence[int]) -> Dict[int, Dict[str, float]]:
  """Each tracking error (mean over steps, then imitations) with every step compared to
  the demo frame `offset` frames from its own (clipped to the demo): an imitation that
  lags the demo scores best at a negative offset, one that is off by a bias at 0."""
  result = {}
  for offset in offsets:
    per_imitation = []
    for imitation in imitations:
      demo = environment.demonstrations[imitation.demo_index]
      shifted = np.clip(imitation.frame_indices + offset, 0, demo.length - 1)
      per_imitation.append(_tracking_errors(environment.domain, imitation.observations,
                                            demo, shifted))
    result[offset] = {name: float(np.mean([np.mean(e[name]) for e in per_imitation]))
                      for name in per_imitation[0]}
  return result


def signed_offsets(imitations: Sequence[Imitation],
                   environment: base.DemoConditionedEnvironment,
                   key: str) -> np.ndarray:
  """Feature `key` of every step of the imitations minus the demo frame it is compared
  to, [steps, ...]: a mean far from zero is a bias, a spread around zero imprecision."""
  return np.concatenate([
      imitation.observations[key][1:] -
      environment.demonstrations[imitation.demo_index].observations[key][
          imitation.frame_indices] for imitation in imitations])


def evaluate_imitation(actor: core.Actor,
                       environment: base.DemoConditionedEnvironment,
                       demo_indices: Optional[Sequence[int]] = None) -> Dict[str, float]:
  """Imitates demonstrations once each (one shot, no noise): all, or `demo_indices`;
  returns `summarize_imitations` of them."""
  actor.update(wait=True)
  indices = range(environment.num_demonstrations) if demo_indices is None else demo_indices
  return summarize_imitations([imitate(actor, environment, index) for index in indices])


def steps_to_success(task_rewards: Sequence[float], action_repeat: int = 1
                     ) -> Optional[int]:
  """Frames until the step with the first task reward (steps of `action_repeat`
  frames), or None if the task is never solved."""
  hits = np.flatnonzero(np.asarray(task_rewards) > 0)
  return (int(hits[0]) + 1) * action_repeat if hits.size else None


def evaluate_task(actor: core.Actor, environment: base.TaskEnvironment,
                  num_episodes: int) -> Dict[str, float]:
  """The task policy on fresh episodes: return, success and frames to first success."""
  actor.update(wait=True)
  returns, steps = [], []
  for _ in range(num_episodes):
    rewards = [ts.reward for ts in base.run_episode(environment, actor_policy(actor))[1:]]
    returns.append(np.sum(rewards))
    steps.append(steps_to_success(rewards, environment.action_repeat))
  return {'task_return': float(np.mean(returns)), **summarize_task(steps)}


def task_policy_by_seed(actor: core.Actor, domain: base.Domain, seeds: Sequence[int],
                        action_repeat: int = 1) -> List[Optional[int]]:
  """Frames to first task success of the task policy in one fresh episode per seed (the
  task's own initial state for that seed; None: not solved)."""
  actor.update(wait=True)
  return [steps_to_success([ts.reward for ts in base.run_episode(
      base.TaskEnvironment(domain, seed, action_repeat=action_repeat),
      actor_policy(actor))[1:]], action_repeat) for seed in seeds]


def summarize_task(steps: Sequence[Optional[int]]) -> Dict[str, float]:
  """Success rate and mean steps to first success (over the solved episodes) of
  per-episode `steps_to_success` values."""
  solved = [s for s in steps if s is not None]
  return {'task_success': len(solved) / len(steps),
          'task_steps_to_success': float(np.mean(solved)) if solved else float('nan')}
