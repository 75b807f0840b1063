"""Scripted demonstrators by domain, and recording a demonstration with one."""

import importlib

import dm_env
import numpy as np

from metamimic_jax import demonstrations as demos_lib
from metamimic_jax.demonstrators.base import Demonstrator
from metamimic_jax.environments import base as env_base

_DEMONSTRATORS = {
    'point_mass': ('metamimic_jax.demonstrators.point_mass', 'SmoothPathDemonstrator'),
    'point_mass_pixels': ('metamimic_jax.demonstrators.point_mass',
                          'SmoothPathDemonstrator'),
    'jaco_stack': ('metamimic_jax.demonstrators.jaco', 'StackingDemonstrator'),
}


def make_demonstrator(domain: env_base.Domain, seed: int,
                      environment: dm_env.Environment) -> Demonstrator:
  """`domain`'s demonstrator, acting in `environment` (one of `domain`'s raw ones).

  Raises ValueError, listing the domains that have one, for any other domain.
  """
  if domain.name not in _DEMONSTRATORS:
    raise ValueError(f'no demonstrator for domain {domain.name!r}; domains with one: '
                     f'{", ".join(_DEMONSTRATORS)}')
  module_name, class_name = _DEMONSTRATORS[domain.name]
  demonstrator_class = getattr(importlib.import_module(module_name), class_name)
  return demonstrator_class(seed, domain, environment)


def record_demonstration(domain: env_base.Domain, seed: int) -> demos_lib.Demonstration:
  """Runs the domain's demonstrator for one seeded episode and records it."""
  environment = domain.make_environment(seed)
  demonstrator = make_demonstrator(domain, seed, environment)
  first = environment.reset()
  initial_state = domain.capture_state(environment)
  timesteps = env_base.run_episode(environment, demonstrator, first=first,
                                   max_steps=domain.demo_length - 1,
                                   stop=lambda: demonstrator.done)
  frames = [timestep.observation for timestep in timesteps]
  return demos_lib.Demonstration(
      observations={k: np.stack([f[k] for f in frames]) for k in frames[0]},
      initial_state=initial_state,
      task_rewards=np.asarray([ts.reward for ts in timesteps[1:]], np.float32),
      seed=seed)
