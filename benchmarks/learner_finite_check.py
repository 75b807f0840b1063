"""What the learner's per-step finiteness check costs, as ratios to the step without it.

  .venv/bin/python benchmarks/learner_finite_check.py --steps=100 --rounds=3

On point_mass with a preset's networks and batch, in one process, the pmapped sgd_step:
  plain      without the flag (the step as it was);
  flag       with numerics.with_finite_flag, the flag not read;
  flag+read  the same, reading the flag on the host every step (what the learner does).
Variants run in turn for `--rounds` rounds; each reports its best round in steps per
second of CPU time (all threads) and of wall time. The builder is imported, so JAX's CPU
dispatch is synchronous, as in every learner process here.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import cli
from metamimic_jax import jax_utils
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax import numerics
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import PRESETS
from metamimic_jax.environments import make_domain

from absl import flags
from acme import specs
from acme import types
import jax
import numpy as np

_STEPS = flags.DEFINE_integer('steps', 100, 'Steps a round.', lower_bound=1)
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds.', lower_bound=1)
_PRESET = flags.DEFINE_enum('preset', 'cpu_small', list(PRESETS), 'Networks and batch.')


def _batch(spec, batch_size, devices):
  rng = np.random.default_rng(0)
  sample = lambda s: rng.uniform(-0.3, 0.3, (batch_size,) + s.shape).astype(s.dtype)
  per_key = lambda: {'imitation': rng.uniform(0, 1, batch_size).astype(np.float32),
                     'task': rng.uniform(0, 1, batch_size).astype(np.float32)}
  batch = types.Transition(
      observation=jax.tree.map(sample, spec.observations), action=sample(spec.actions),
      reward=per_key(), discount=per_key(),
      next_observation=jax.tree.map(sample, spec.observations))
  return jax.tree.map(lambda x: jax.device_put_sharded(list(x), devices),
                      jax_utils.shard(batch, len(devices)))


def main(argv):
  del argv
  config = PRESETS[_PRESET.value]
  domain = make_domain('point_mass')
  builder = MetaMimicBuilder(config, domain)
  spec = specs.make_environment_spec(builder.make_task_environment(0))
  spec = specs.EnvironmentSpec(  # The demo-conditioned spec: a goal of the horizon.
      observations={'observation': spec.observations,
                    'goal': jax.tree.map(
                        lambda s: specs.Array((config.goal_horizon,) + s.shape, s.dtype),
                        spec.observations)},
      actions=spec.actions, rewards=spec.rewards, discounts=spec.discounts)
  networks = builder.make_networks(spec)
  devices = jax.local_devices()
  state = jax_utils.replicate(learning.init_training_state(
      jax.random.PRNGKey(0), networks, *networks_lib.dummy_inputs(spec), config), devices)
  batch = _batch(spec, config.batch_size, devices)
  sgd_step = learning.make_sgd_step(networks, config, axis_name='devices')
  plain = jax.pmap(sgd_step, axis_name='devices', devices=devices)
  flagged = jax.pmap(numerics.with_finite_flag(sgd_step, learning.online_parameters),
                     axis_name='devices', devices=devices)

  def run_plain(s):
    return plain(s, batch)[0]

  def run_flag(s):
    return flagged(s, batch)[0]

  def run_flag_read(s):
    s, _, finite = flagged(s, batch)
    assert np.all(finite)
    return s

  variants = {'plain': run_plain, 'flag': run_flag, 'flag+read': run_flag_read}
  best = {name: (0.0, 0.0) for name in variants}
  for name, run in variants.items():  # Compile.
    jax.block_until_ready(run(state))
  for _ in range(_ROUNDS.value):
    for name, run in variants.items():
      s = state
      wall, cpu = time.perf_counter(), time.process_time()
      for _ in range(_STEPS.value):
        s = run(s)
      jax.block_until_ready(s)
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      best[name] = (max(best[name][0], _STEPS.value / cpu),
                    max(best[name][1], _STEPS.value / wall))
  print(f'{_PRESET.value} on point_mass, batch {config.batch_size}, '
        f'{len(devices)} device(s), best of {_ROUNDS.value} x {_STEPS.value} steps')
  for name, (cpu_rate, wall_rate) in best.items():
    print(f'  {name:10s} {cpu_rate:7.1f} steps/CPU s ({cpu_rate / best["plain"][0]:.3f}), '
          f'{wall_rate:7.1f} steps/s wall ({wall_rate / best["plain"][1]:.3f})')


if __name__ == '__main__':
  cli.run(main)
