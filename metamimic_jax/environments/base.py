"""Domains, and the demo-conditioned environment every MetaMimic actor runs in.

A `Domain` makes raw environments (dict observations, the sparse task reward) and knows
how to capture and restore the simulator state a demonstration starts from. The
`DemoConditionedEnvironment` turns it into the imitation problem: each episode replays
one demonstration's initial state, lasts as long as the demonstration, shows the agent
the next demonstration frames as its goal, and pays the imitation and the task reward.
"""

import abc
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import dm_env
from dm_env import specs
import numpy as np

from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import rewards
from metamimic_jax.config import FeatureGroup
from metamimic_jax.keys import GOAL, IMITATION, OBSERVATION, TASK

Policy = Callable[[dm_env.TimeStep], np.ndarray]  # The action to take at a timestep.


class Domain(abc.ABC):
  """A simulated domain MetaMimic imitates in."""

  name: str
  demo_length: int  # Frames in a recorded demonstration (at most).
  default_reward_groups: Tuple[FeatureGroup, ...]
  # The observation keys whose demo frames the agent sees as its goal (None: all).
  default_goal_keys: Optional[Tuple[str, ...]] = None
  trajectory_key: str  # An observation key whose first two entries plot as a path.

  @abc.abstractmethod
  def make_environment(self, seed: int,
                       time_limit: Optional[float] = None) -> dm_env.Environment:
    """A raw environment: float32 dict observations, the sparse task reward."""

  @abc.abstractmethod
  def capture_state(self, environment: dm_env.Environment) -> Dict[str, np.ndarray]:
    """Everything needed to restore the environment's current state."""

  @abc.abstractmethod
  def restore_state(self, environment: dm_env.Environment,
                    state: Mapping[str, np.ndarray]) -> dm_env.TimeStep:
    """Starts an episode at `state`; returns its FIRST timestep."""

  @abc.abstractmethod
  def tracking_errors(self, observation: Mapping[str, np.ndarray],
                      demo_frame: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """How far an observation is from the demonstration frame, in physical units."""


def run_episode(environment: dm_env.Environment, policy: Policy,
                first: Optional[dm_env.TimeStep] = None,
                max_steps: Optional[int] = None,
                stop: Callable[[], bool] = lambda: False) -> List[dm_env.TimeStep]:
  """Every timestep of one episode, `first` (default: a reset) included.

  `policy` acts until the environment's last timestep, `max_steps` steps, or `stop()`
  (asked after each step).
  """
  timesteps = [environment.reset() if first is None else first]
  while not timesteps[-1].last() and (max_steps is None or len(timesteps) <= max_steps):
    timesteps.append(environment.step(policy(timesteps[-1])))
    if stop():
      break
  return timesteps


def raw_timestep(timestep: dm_env.TimeStep) -> dm_env.TimeStep:
  """A demo-conditioned or task timestep as the raw environment gave it (no goal)."""
  return timestep._replace(observation=timestep.observation[OBSERVATION])


class DemoConditionedEnvironment(dm_env.Environment):
  """Episodes that imitate a demonstration: observation {observation, goal}.

  Each step repeats the action for `action_repeat` (k) frames. At frame f the goal is
  demo frames f+k, f+2k, .., f+Hk, the demonstration at the next H decisions (the last
  frame repeats past the end); the reward is {'imitation': the mean similarity of
  o_f+i to d_f+i over the k frames, 'task': the mean task reward} (k = 1: o_t+1 and
  d_t+1 as in the paper). The episode ends with the demonstration as a time limit
  (discount 1, so both critics bootstrap): the observation does not say how much of the
  demonstration is left, and past its end the goal stays at the last frame, a state
  worth holding.
  """

  def __init__(self,
               domain: Domain,
               demonstrations: Sequence[demos_lib.Demonstration],
               reward_groups: Sequence[FeatureGroup],
               goal_keys: Optional[Sequence[str]] = None,
               goal_horizon: int = 1,
               seed: int = 0,
               action_repeat: int = 1):
    if not demonstrations:
      raise ValueError('DemoConditionedEnvironment needs at least one demonstration')
    if action_repeat < 1:
      raise ValueError(f'action_repeat must be >= 1, got {action_repeat}')
    self._action_repeat = action_repeat
    self._domain = domain
    self._environment = domain.make_environment(seed, time_limit=float('inf'))
    self._demos = list(demonstrations)
    self._rng = np.random.default_rng(seed)
    self._goal_horizon = goal_horizon
    raw_spec = self._environment.observation_spec()
    self._goal_keys = tuple(goal_keys) if goal_keys else tuple(raw_spec)
    unknown = sorted(set(self._goal_keys).union(*[g.keys for g in reward_groups])
                     - set(raw_spec))
    if unknown:
      raise ValueError(f'goal/reward keys {unknown} are not observations of '
                       f'{domain.name}: {sorted(raw_spec)}')
    demos_lib.check_shapes(self._demos, {k: s.shape for k, s in raw_spec.items()},
                           domain.name)
    self._reward_groups = tuple(reward_groups)
    self._next_demo: Optional[int] = None
    self._demo: demos_lib.Demonstration = self._demos[0]
    self._goals: Dict[str, np.ndarray] = {}
    self._targets: List[np.ndarray] = []  # The demo's group features, frame by frame.
    self._t = 0

  @property
  def num_demonstrations(self) -> int:
    return len(self._demos)

  def select_demonstration(self, index: int) -> None:
    """The next reset imitates demonstration `index` (otherwise one at random)."""
    self._next_demo = index

  @property
  def demonstration(self) -> demos_lib.Demonstration:
    """The demonstration of the current episode (set by `reset`)."""
    return self._demo

  @property
  def demonstrations(self) -> Tuple[demos_lib.Demonstration, ...]:
    """All demonstrations, in the order `select_demonstration` indexes them."""
    return tuple(self._demos)

  @property
  def domain(self) -> Domain:
    return self._domain

  @property
  def action_repeat(self) -> int:
    return self._action_repeat

  @property
  def frame(self) -> int:
    """The demonstration frame the episode has reached: frames simulated since reset."""
    return self._t

  def reset(self) -> dm_env.TimeStep:
    index = (self._rng.integers(len(self._demos))
             if self._next_demo is None else self._next_demo)
    self._next_demo = None
    self._demo = self._demos[index]
    self._goals = self._goal_frames(self._demo)
    self._targets = rewards.group_features(self._demo.observations, self._reward_groups,
                                           batch_dims=1)
    self._t = 0
    timestep = self._domain.restore_state(self._environment, self._demo.initial_state)
    return dm_env.restart(self._observation(timestep.observation))

  def step(self, action: np.ndarray) -> dm_env.TimeStep:
    imitation_total, task_total, frames = 0.0, 0.0, 0
    while frames < self._action_repeat:
      timestep = self._environment.step(action)
      self._t += 1
      frames += 1
      imitation_total += rewards.imitation_reward_of_features(
          rewards.group_features(timestep.observation, self._reward_groups),
          [features[self._t] for features in self._targets], self._reward_groups)
      task_total += timestep.reward
      if timestep.last() or self._t >= self._demo.length - 1:
        break
    reward = {IMITATION: np.float32(imitation_total / frames),
              TASK: np.float32(task_total / frames)}
    observation = self._observation(timestep.observation)
    if timestep.last():  # The raw environment's own end (discount 0 if terminal).
      return dm_env.truncation(reward, observation, np.float32(timestep.discount))
    if self._t >= self._demo.length - 1:  # A time limit: both critics bootstrap here.
      return dm_env.truncation(reward, observation, np.float32(1))
    return dm_env.transition(reward, observation, np.float32(1))

  def _goal_frames(self, demo: demos_lib.Demonstration) -> Dict[str, np.ndarray]:
    """The goal keys' frames 1 .. T-1, then the last frame H k times (read-only).

    The goal at frame f, frames f+k, .., f+Hk with the last repeating past the end, is
    then the strided slice [f+k-1 : f+Hk : k]: a view, not a copy.
    """
    goals = {}
    padding = self._goal_horizon * self._action_repeat
    for key in self._goal_keys:
      frames = demo.observations[key]
      padded = np.concatenate([frames[1:], np.repeat(frames[-1:], padding, 0)])
      padded.flags.writeable = False
      goals[key] = padded
    return goals

  def _observation(self, raw: Mapping[str, np.ndarray]) -> Dict[str, object]:
    k = self._action_repeat
    window = slice(self._t + k - 1, self._t + self._goal_horizon * k, k)
    return {OBSERVATION: dict(raw),
            GOAL: {key: frames[window] for key, frames in self._goals.items()}}

  def observation_spec(self):
    raw_spec = self._environment.observation_spec()
    goal_spec = {k: specs.Array((self._goal_horizon,) + raw_spec[k].shape,
                                raw_spec[k].dtype, name=k) for k in self._goal_keys}
    return {OBSERVATION: dict(raw_spec), GOAL: goal_spec}

  def action_spec(self):
    return self._environment.action_spec()

  def reward_spec(self):
    return {IMITATION: specs.Array((), np.float32, IMITATION),
            TASK: specs.Array((), np.float32, TASK)}

  def discount_spec(self):
    return specs.BoundedArray((), np.float32, 0.0, 1.0, 'discount')

  @property
  def environment(self) -> dm_env.Environment:
    return self._environment


class TaskEnvironment(dm_env.Environment):
  """Fresh task episodes (no demonstration): observation {observation}, task reward
  (as {'task': reward} with `keyed_reward`, the reward layout learners read).

  Each step repeats the action for `action_repeat` frames; the reward is their mean.
  """

  def __init__(self, domain: Domain, seed: int, time_limit: Optional[float] = None,
               keyed_reward: bool = False, action_repeat: int = 1):
    if action_repeat < 1:
      raise ValueError(f'action_repeat must be >= 1, got {action_repeat}')
    self._environment = domain.make_environment(seed, time_limit=time_limit)
    self._keyed_reward = keyed_reward
    self._action_repeat = action_repeat

  @property
  def action_repeat(self) -> int:
    return self._action_repeat

  def reset(self) -> dm_env.TimeStep:
    return self._wrap(self._environment.reset())

  def step(self, action: np.ndarray) -> dm_env.TimeStep:
    task_total, frames = 0.0, 0
    while frames < self._action_repeat:
      timestep = self._environment.step(action)
      task_total += timestep.reward
      frames += 1
      if timestep.last():
        break
    return self._wrap(timestep._replace(reward=task_total / frames))

  def _wrap(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
    reward = None if timestep.reward is None else np.float32(timestep.reward)
    if self._keyed_reward and reward is not None:
      reward = {TASK: reward}
    discount = None if timestep.discount is None else np.float32(timestep.discount)
    return timestep._replace(observation={OBSERVATION: dict(timestep.observation)},
                             reward=reward, discount=discount)

  def observation_spec(self):
    return {OBSERVATION: dict(self._environment.observation_spec())}

  def action_spec(self):
    return self._environment.action_spec()

  def reward_spec(self):
    spec = specs.Array((), np.float32, TASK)
    return {TASK: spec} if self._keyed_reward else spec

  def discount_spec(self):
    return specs.BoundedArray((), np.float32, 0.0, 1.0, 'discount')

  @property
  def environment(self) -> dm_env.Environment:
    return self._environment


class Float32Environment(dm_env.Environment):
  """float32 observations and actions (pixels keep uint8)."""

  def __init__(self, environment: dm_env.Environment):
    self._environment = environment

  def _cast(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
    observation = {k: _float32(v) for k, v in timestep.observation.items()}
    return timestep._replace(observation=observation)

  def reset(self):
    return self._cast(self._environment.reset())

  def step(self, action):
    return self._cast(self._environment.step(action))

  def observation_spec(self):
    return {k: s.replace(dtype=np.float32) if np.issubdtype(s.dtype, np.floating) else s
            for k, s in self._environment.observation_spec().items()}

  def action_spec(self):
    return self._environment.action_spec().replace(dtype=np.float32)

  def reward_spec(self):
    return self._environment.reward_spec()

  def discount_spec(self):
    return self._environment.discount_spec()

  def __getattr__(self, name):
    return getattr(self._environment, name)


def _float32(value: np.ndarray) -> np.ndarray:
  value = np.asarray(value)
  if np.issubdtype(value.dtype, np.floating):
    return value.astype(np.float32)
  return value
