"""The interface of scripted demonstrators."""

import abc

import dm_env
import numpy as np


class Demonstrator(abc.ABC):
  """A scripted policy that acts on raw timesteps (it may read privileged state).

  The registry (`demonstrators.make_demonstrator`) builds them as
  `cls(seed, domain, environment)`, where `environment` is the domain's raw environment
  they act in; different seeds give different skills.
  """

  @abc.abstractmethod
  def reset(self, timestep: dm_env.TimeStep) -> None:
    """Starts a new episode from its first timestep."""

  @abc.abstractmethod
  def step(self, timestep: dm_env.TimeStep) -> np.ndarray:
    """The action to take."""

  @property
  def done(self) -> bool:
    """True once the demonstration is complete and recording may stop early."""
    return False

  def __call__(self, timestep: dm_env.TimeStep) -> np.ndarray:
    """A policy for `run_episode`: starts an episode on a FIRST timestep, then acts."""
    if timestep.first():
      self.reset(timestep)
    return self.step(timestep)
