"""Baselines that learning benchmarks print beside the agent: zero action,
demonstrators, raw env speed."""

import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from metamimic_jax import demonstrators
from metamimic_jax import evaluation
from metamimic_jax import keys
from metamimic_jax.environments import base


def zero_action_imitation(environment: base.DemoConditionedEnvironment
                          ) -> Dict[str, float]:
  """Imitation by a policy that always acts zero (the point mass left alone, the arm held
  still): `evaluation.evaluate_imitation`'s summary over the environment's demos."""
  action = np.zeros(environment.action_spec().shape, np.float32)
  return evaluation.evaluate_imitation(evaluation.ConstantActor(action), environment)


def demonstrator_imitation(domain: base.Domain,
                           environment: base.DemoConditionedEnvironment
                           ) -> Dict[str, float]:
  """The demonstrators re-run from their demos' seeds, in the demo-conditioned env.

  Returns their mean per-step imitation reward (1.0 when the domain is deterministic)
  and their mean steps to first task success, as recorded in the demonstrations.
  """
  if environment.action_repeat != 1:
    raise ValueError('demonstrators act every frame: give an environment with '
                     f'action_repeat 1, not {environment.action_repeat}')
  rewards, steps_to_success = [], []
  for index, demo in enumerate(environment.demonstrations):
    environment.select_demonstration(index)
    demonstrator = demonstrators.make_demonstrator(domain, demo.seed,
                                                   environment.environment)
    timesteps = base.run_episode(
        environment, lambda timestep: demonstrator(base.raw_timestep(timestep)))
    rewards.append(np.mean([ts.reward[keys.IMITATION] for ts in timesteps[1:]]))
    hits = np.flatnonzero(demo.task_rewards > 0)
    if hits.size:
      steps_to_success.append(hits[0] + 1)
  return {'imitation_reward': float(np.mean(rewards)),
          'task_steps_to_success': (float(np.mean(steps_to_success))
                                    if steps_to_success else float('nan'))}


def demonstrator_task_by_seed(domain: base.Domain,
                              seeds: Sequence[int]) -> List[Optional[int]]:
  """Steps to first task success of the demonstrator in one fresh episode per seed
  (None: not solved), from the same initial states as `task_policy_by_seed`'s."""
  steps = []
  for seed in seeds:
    environment = domain.make_environment(seed)
    demonstrator = demonstrators.make_demonstrator(domain, seed, environment)
    rewards = [ts.reward for ts in base.run_episode(environment, demonstrator)[1:]]
    steps.append(evaluation.steps_to_success(rewards))
  return steps


def raw_env_steps_per_second(domain: base.Domain, seconds: float = 3.0) -> float:
  """Zero-action steps/s of one raw environment of `domain`: the simulator's bound."""
  environment = domain.make_environment(0)
  environment.reset()
  action = np.zeros(environment.action_spec().shape, np.float32)
  start, steps = time.time(), 0
  while time.time() - start < seconds:
    if environment.step(action).last():
      environment.reset()
    steps += 1
  return steps / (time.time() - start)
