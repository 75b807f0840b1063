"""Acme's environment loop for an ActorBatch: several environments, one policy call."""

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from acme.utils import counting
from acme.utils import loggers
import dm_env
import numpy as np

from metamimic_jax import acting


class BatchedEnvironmentLoop:
  """Steps one environment per member of an ActorBatch, all with one policy call a step.

  An environment whose episode ends is reset at once, so the environments' episodes
  drift apart. Each finished episode is counted (`episodes`, `steps`) and logged as
  Acme's EnvironmentLoop does: episode_length, episode_return (per reward key),
  steps_per_second (of all the environments together, over that episode) and the
  counter's counts. After every step of all the environments the loop calls `update`
  (default: the actor's, which refreshes its parameters).
  """

  def __init__(self, environments: Sequence[dm_env.Environment],
               actor: acting.ActorBatch,
               counter: Optional[counting.Counter] = None,
               logger: Optional[loggers.Logger] = None,
               update: Optional[Callable[[], None]] = None):
    if len(environments) != len(actor):
      raise ValueError(f'{len(environments)} environments for an actor batch of '
                       f'{len(actor)}')
    self._environments = list(environments)
    self._actor = actor
    self._counter = counter or counting.Counter()
    self._logger = logger or loggers.NoOpLogger()
    self._update = update or actor.update
    self._timesteps: Optional[List[dm_env.TimeStep]] = None
    self._lengths = np.zeros(len(environments), np.int64)
    # Each episode's return so far, per reward key (a scalar reward: one column): a
    # sum for all the environments at once.
    self._reward_keys: Optional[Tuple[str, ...]] = None
    self._returns: Optional[np.ndarray] = None
    self._starts = [(0.0, 0)] * len(environments)  # (time, self._steps) at reset.
    self._steps = 0  # Steps of all environments.

  def run_until_episode_end(self) -> List[Dict[str, object]]:
    """Steps all environments until at least one episode ends; returns (and logs) the
    results of the episodes that ended."""
    while True:
      results = self.step()
      if results:
        return results

  def run(self, num_steps: Optional[int] = None) -> None:
    """Steps until at least `num_steps` steps of all environments (None: forever)."""
    start = self._steps
    while num_steps is None or self._steps - start < num_steps:
      self.step()

  def step(self) -> List[Dict[str, object]]:
    """One step of every environment; the results of the episodes it ended."""
    if self._timesteps is None:
      self._timesteps = [self._reset(i) for i in range(len(self._environments))]
    actions = self._actor.select_actions([ts.observation for ts in self._timesteps])
    results = []
    # All the simulation, then all the bookkeeping and replay writing, so each runs
    # with its own code and data in the caches (the benchmark could not tell the two
    # orders apart beyond its noise).
    self._timesteps = [environment.step(action)
                       for environment, action in zip(self._environments, actions)]
    self._actor.observe_all(actions, self._timesteps)
    self._add_rewards([timestep.reward for timestep in self._timesteps])
    self._lengths += 1
    self._steps += len(self._environments)
    self._update()
    for i, timestep in enumerate(self._timesteps):
      if timestep.last():
        results.append(self._finish(i))
        self._timesteps[i] = self._reset(i)
    return results

  def _reset(self, index: int) -> dm_env.TimeStep:
    timestep = self._environments[index].reset()
    self._actor.observe_first(index, timestep)
    self._lengths[index] = 0
    if self._returns is not None:
      self._returns[index] = 0
    self._starts[index] = (time.time(), self._steps)
    return timestep

  def _add_rewards(self, rewards: Sequence) -> None:
    """Adds each environment's reward (a dict of scalars or a scalar) to its return."""
    if self._returns is None:
      if isinstance(rewards[0], dict):
        self._reward_keys = tuple(rewards[0])
      self._returns = np.zeros((len(rewards), len(self._reward_keys or (None,))),
                               np.float32)
    keys = self._reward_keys
    self._returns += (np.array(rewards, np.float32)[:, None] if keys is None else
                      np.array([[reward[key] for key in keys] for reward in rewards],
                               np.float32))

  def _finish(self, index: int) -> Dict[str, object]:
    length = int(self._lengths[index])
    counts = self._counter.increment(episodes=1, steps=length)
    start_time, start_steps = self._starts[index]
    returns = self._returns[index]
    result = {
        'episode_length': length,
        'episode_return': (returns[0] if self._reward_keys is None
                           else dict(zip(self._reward_keys, returns))),
        'steps_per_second': (self._steps - start_steps) / max(time.time() - start_time,
                                                              1e-9),
        **counts,
    }
    self._logger.write(result)
    return result
