"""Distributed throughput: actor and learner steps/s for 1, 2 and 4 actors.

  .venv/bin/python benchmarks/distributed_throughput.py --actor_steps=6000

Launches launchpad_programs/imitate.py (local_mp, fast domain) once per actor count and
reads each node's CSV logs: per-actor env steps/s (Acme EnvironmentLoop, per episode),
their total, and learner steps/s. Raw env steps/s (one process, zero actions, no agent)
is measured in the same run as the bound each actor could reach alone. Extra flags after
`--` go to the program (e.g. -- --policy_layers=64,64 --critic_layers=64,64).
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import plotting
from metamimic_jax.environments import make_domain

from absl import app
from absl import flags
import numpy as np

_ACTOR_COUNTS = flags.DEFINE_list('actor_counts', ['1', '2', '4'], 'Actor counts to run.')
_ACTOR_STEPS = flags.DEFINE_integer('actor_steps', 6000, 'Steps per launch.')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw_env_steps_per_second(seconds: float = 3.0) -> float:
  environment = make_domain('point_mass').make_environment(0)
  environment.reset()
  start, steps = time.time(), 0
  while time.time() - start < seconds:
    if environment.step(np.zeros(2, np.float32)).last():
      environment.reset()
    steps += 1
  return steps / (time.time() - start)


def _second_half(values):
  return values[len(values) // 2:]


def measure(num_actors: int, extra_flags) -> dict:
  workdir = tempfile.mkdtemp(prefix=f'metamimic_throughput_{num_actors}_')
  command = [sys.executable, os.path.join(ROOT, 'launchpad_programs', 'imitate.py'),
             '--lp_launch_type=local_mp', '--domain=point_mass', f'--workdir={workdir}',
             f'--num_actors={num_actors}', f'--max_actor_steps={_ACTOR_STEPS.value}',
             '--num_demos=24', '--eval_every_seconds=30', *extra_flags]
  subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
  per_actor = []
  for i in range(num_actors):
    rows = plotting.read_csv(os.path.join(workdir, 'logs', f'actor_{i}', 'logs.csv'))
    per_actor.append(float(np.mean(_second_half(rows['steps_per_second']))))
  learner = plotting.read_csv(os.path.join(workdir, 'logs', 'learner', 'logs.csv'))
  steps = _second_half(learner['learner_steps'])
  walltime = _second_half(learner['learner_walltime'])
  learner_rate = (steps[-1] - steps[0]) / max(walltime[-1] - walltime[0], 1e-9)
  return {'per_actor': per_actor, 'total': sum(per_actor), 'learner': learner_rate}


def main(argv):
  extra_flags = argv[1:]
  raw = raw_env_steps_per_second()
  print(f'raw env steps/s (one process, no agent): {raw:.0f}   '
        f'cores: {os.cpu_count()}   program flags: {extra_flags or "defaults"}')
  print(f'{"actors":>6} {"per actor steps/s":>24} {"total":>8} {"total/raw":>9} '
        f'{"learner steps/s":>15}')
  for count in (int(c) for c in _ACTOR_COUNTS.value):
    result = measure(count, extra_flags)
    per_actor = ', '.join(f'{r:.0f}' for r in result['per_actor'])
    print(f'{count:>6} {per_actor:>24} {result["total"]:>8.0f} '
          f'{result["total"] / raw:>9.3f} {result["learner"]:>15.1f}', flush=True)


if __name__ == '__main__':
  app.run(main)
