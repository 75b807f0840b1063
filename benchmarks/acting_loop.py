"""Acting loop speed: each layer of the actor's loop as a ratio to the raw simulator.

  .venv/bin/python benchmarks/acting_loop.py --seconds=1 --rounds=7

For each domain (point_mass; jaco_stack with features), in one process, zero actions
unless stated:
  raw        the domain's environment alone;
  demo env   the demo-conditioned environment (goal, imitation and task rewards);
  + policy   the acting loop training uses (batched_loop) with one environment and the
             actor (default networks, exploration noise), no adder;
  N envs     the full loop: N demo envs acting together (one policy call a step for
             all), the builder's adder for N writing their transitions to a local
             Reverb server (items of N, one from each); one stage per value of
             --num_envs.
It also prints the CPU milliseconds of a reset of the raw and the demo env (a demo env
restores a demo's first state).
The actor refreshes its parameters every `--variable_update_period` steps from a source
serving host arrays, as the learner does. With `--action_repeat` k the demo env, policy
and adder act once every k frames (as the cpu_small preset does on Jaco); rates are
always per simulated frame. Rates are per second of this process's CPU time (all its
threads, the Reverb server's included). The machine's speed drifts within seconds, so
in each of `--rounds` rounds every stage runs for `--seconds` right after the raw
environment does, and its ratio is to that raw rate; each stage reports its median
rate and median ratio over the rounds, and the ratios' range. Demos are recorded
in-process (jaco: about 3 s each) unless `--demo_dir` holds a domain's `train.h5`.
"""

import os
import sys
import time
from typing import Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import batched_loop
from metamimic_jax import cli
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import demonstrators
from metamimic_jax import learner as learner_lib
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import DOMAIN_NAMES
from metamimic_jax.environments import make_domain

from absl import app
from absl import flags
from acme import specs
import jax
import numpy as np
import reverb

_DOMAINS = flags.DEFINE_list('domains', ['point_mass', 'jaco_stack'], 'Domains to run.')
_SECONDS = flags.DEFINE_float('seconds', 1.0, 'Seconds per stage per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 7, 'Rounds over all stages.', lower_bound=1)
_POINT_MASS_DEMOS = flags.DEFINE_integer('point_mass_demos', 8, 'point_mass demos.',
                                         lower_bound=1)
_JACO_DEMOS = flags.DEFINE_integer('jaco_demos', 3, 'jaco_stack demos (about 3 s each).',
                                   lower_bound=1)
_DEMO_DIR = flags.DEFINE_string('demo_dir', None, 'A directory per domain '
                                '(DEMO_DIR/<domain>/train.h5) to load demos from.')
_UPDATE_PERIOD = flags.DEFINE_integer('variable_update_period', 100,
                                      'Actor steps between parameter fetches.',
                                      lower_bound=1)
_NUM_ENVS = flags.DEFINE_list('num_envs', ['1', '4', '8', '16'],
                               'Environments acting together, one full-loop stage each.')
_ACTION_REPEAT = flags.DEFINE_integer('action_repeat', 1, 'Frames per action of the '
                                      'demo-env stages.', lower_bound=1)


class _HostParams:
  """A variable source serving fixed policy parameters as host arrays (as the learner)."""

  def __init__(self, networks, spec, config):
    dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
    state = learning.init_training_state(jax.random.PRNGKey(0), networks,
                                         dummy_observation, dummy_action, config)
    self._policies = jax.device_get({
        learner_lib.MetaMimicLearner.IMITATION_POLICY: state.imitation.policy_params,
        learner_lib.MetaMimicLearner.TASK_POLICY: state.task.policy_params})

  def get_variables(self, names):
    return [jax.tree.map(np.copy, self._policies[name]) for name in names]


def _demonstrations(domain, num):
  if _DEMO_DIR.value:
    path = os.path.join(_DEMO_DIR.value, domain.name, 'train.h5')
    if os.path.exists(path):
      return demos_lib.load(path, domain.name)[:num]
  return [demonstrators.record_demonstration(domain, seed) for seed in range(num)]


def _cpu_steps_per_second(run_for) -> float:
  """Frames per CPU second of `run_for(deadline)`, which steps until time.time() >
  deadline and returns the frames simulated."""
  cpu_start = time.process_time()
  steps = run_for(time.time() + _SECONDS.value)
  return steps / (time.process_time() - cpu_start)


def _frames(environment, steps: int) -> int:
  """Frames simulated in an episode of `steps` steps: a demo env counts its own."""
  return getattr(environment, 'frame', steps)


def _zero_action_loop(environment, action):
  def run_for(deadline):
    environment.reset()
    frames = steps = 0
    while time.time() < deadline:
      steps += 1
      if environment.step(action).last():
        frames += _frames(environment, steps)
        environment.reset()
        steps = 0
    return frames + _frames(environment, steps)
  return run_for


def _reset_milliseconds(environment, resets: int = 10) -> float:
  """CPU milliseconds (all threads) a reset takes, after a first one."""
  environment.reset()
  start = time.process_time()
  for _ in range(resets):
    environment.reset()
  return 1e3 * (time.process_time() - start) / resets


class _FrameCounter:
  """A demo env that counts the frames it simulates (action repeat included)."""

  def __init__(self, environment):
    self._environment = environment
    self.frames = 0

  def reset(self):
    return self._environment.reset()

  def step(self, action):
    before = self._environment.frame
    timestep = self._environment.step(action)
    self.frames += self._environment.frame - before
    return timestep


def _actor_loop(environments, actor):
  counted = [_FrameCounter(environment) for environment in environments]
  loop = batched_loop.BatchedEnvironmentLoop(counted, actor)
  def run_for(deadline):
    start = sum(environment.frames for environment in counted)
    while time.time() < deadline:
      loop.step()
    return sum(environment.frames for environment in counted) - start
  return run_for


def measure(domain_name: str, num_envs_stages: Sequence[int]):
  """CPU frames/s per stage and round (raw: one before each other stage), each stage's
  ratios to the raw rate measured just before it, and reset times; a full-loop stage
  for each number of environments in `num_envs_stages`."""
  domain = make_domain(domain_name)
  num_demos = _JACO_DEMOS.value if domain_name == 'jaco_stack' else _POINT_MASS_DEMOS.value
  demos = _demonstrations(domain, num_demos)
  config = MetaMimicConfig(action_repeat=_ACTION_REPEAT.value)
  builder = MetaMimicBuilder(config, domain)
  demo_environment = builder.make_demo_environment(demos, seed=0)
  spec = specs.make_environment_spec(demo_environment)
  networks = builder.make_networks(spec)
  source = _HostParams(networks, spec, config)
  server = reverb.Server(builder.make_replay_tables(spec, False), port=None)
  client = reverb.Client(f'localhost:{server.port}')

  def actor(num_envs, adder=None):
    return builder.make_actor_batch(
        jax.random.split(jax.random.PRNGKey(1), num_envs), networks, spec, source,
        adder, variable_update_period=_UPDATE_PERIOD.value)

  def demo_environments(num_envs, seed):
    return [builder.make_demo_environment(demos, seed=seed + i) for i in range(num_envs)]

  zeros = np.zeros(spec.actions.shape, spec.actions.dtype)
  stages = {
      'raw': _zero_action_loop(domain.make_environment(0), zeros),
      'demo env': _zero_action_loop(demo_environment, zeros),
      '+ policy': _actor_loop(demo_environments(1, 1), actor(1)),
  }
  for num_envs in num_envs_stages:
    stages[f'{num_envs} envs'] = _actor_loop(
        demo_environments(num_envs, 100),
        actor(num_envs, builder.make_adder(client, spec, num_envs)))
  resets = {'raw': _reset_milliseconds(domain.make_environment(0)),
            'demo env': _reset_milliseconds(demo_environment)}
  for run_for in stages.values():  # Compile and warm up.
    run_for(time.time() + 0.2)
  # Each stage is timed right after the raw environment, and its ratio is taken to
  # that raw rate: the machine's speed drifts within seconds.
  raw = stages.pop('raw')
  rates = {name: [] for name in ['raw', *stages]}
  ratios = {name: [] for name in stages}
  for _ in range(_ROUNDS.value):
    for name, run_for in stages.items():
      raw_rate, rate = _cpu_steps_per_second(raw), _cpu_steps_per_second(run_for)
      rates['raw'].append(raw_rate)
      rates[name].append(rate)
      ratios[name].append(rate / raw_rate)
  server.stop()
  return rates, ratios, resets


def _num_envs():
  try:
    values = [int(v) for v in _NUM_ENVS.value]
  except ValueError:
    raise app.UsageError(f'--num_envs must be integers, got {_NUM_ENVS.value}')
  if not values or min(values) < 1:
    raise app.UsageError(f'--num_envs needs positive values, got {_NUM_ENVS.value}')
  return values


def main(argv):
  del argv
  num_envs_stages = _num_envs()
  unknown = sorted(set(_DOMAINS.value) - set(DOMAIN_NAMES))
  if unknown:
    raise app.UsageError(f'unknown domains {unknown}; known: {", ".join(DOMAIN_NAMES)}')
  print(f'{_ROUNDS.value} rounds x {_SECONDS.value:g} s per stage, each stage right '
        f'after the raw env; medians over the rounds; variable_update_period '
        f'{_UPDATE_PERIOD.value}; action_repeat {_ACTION_REPEAT.value}; cores: '
        f'{os.cpu_count()}')
  for domain_name in _DOMAINS.value:
    rates, ratios, resets = measure(domain_name, num_envs_stages)
    print(f'{domain_name}:{"CPU frames/s":>20}   x raw (rounds\' range)')
    print(f'  {"raw":<9} {np.median(rates["raw"]):>8.0f}')
    for name, stage_ratios in ratios.items():
      print(f'  {name:<9} {np.median(rates[name]):>8.0f}  '
            f'{np.median(stage_ratios):>5.2f}x '
            f'({min(stage_ratios):.2f}-{max(stage_ratios):.2f})', flush=True)
    print('  reset CPU ms: ' + ', '.join(f'{name} {ms:.2f}' for name, ms in resets.items()))


if __name__ == '__main__':
  cli.run(main)
