"""Program throughput: the learner inside the local_mp program against the same step alone.

  .venv/bin/python benchmarks/program_throughput.py --domain=jaco_stack \
      --demo_dir=runs/jaco_demos -- --num_actors=1

In one run: (1) times the learner step alone in this process (same config and domain,
sampling through the same Reverb dataset from an in-process table), wall and CPU seconds
per step; (2) launches launchpad_programs/imitate.py (local_mp) and, over a steady window
after the learner starts stepping, samples the CPU time and resident memory of every
node process (grouped by the METAMIMIC_NODE label the launcher sets), the CPU time of
everything outside the program, and the learner's steps from its CSV log; (3) prints
per node its CPU share (cores), CPU seconds per learner step and memory at the window's
start and end, the bound the CPU leaves, available cores / program CPU seconds per
learner step, and the program's learner steps/s against the solo step and the bound.
Agent flags (--preset, --batch_size, ...) apply to both; flags after `--` go to the
program only.
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import cli
from metamimic_jax import demo_sets
from metamimic_jax import distributed
from metamimic_jax import flags as config_flags
from metamimic_jax import plotting
from metamimic_jax import sizing
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.environments import DOMAIN_NAMES
from metamimic_jax.environments import make_domain

from absl import flags
import psutil

_DOMAIN = flags.DEFINE_enum('domain', 'point_mass', DOMAIN_NAMES, 'Domain.')
_DEMO_DIR = flags.DEFINE_string('demo_dir', None, 'train.h5 and held_out.h5 (default: '
                                'generated into a temporary directory).')
_NUM_DEMOS = flags.DEFINE_integer('num_demos', 24, 'Demos to generate if none given.')
_SOLO_STEPS = flags.DEFINE_integer('solo_steps', 40, 'Learner steps timed alone.')
_WARMUP = flags.DEFINE_float('warmup_seconds', 30.0, 'Seconds after the learner starts '
                             'stepping before the window opens.')
_WINDOW = flags.DEFINE_float('window_seconds', 120.0, 'Measured window (seconds).')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTSIDE = 'outside the program'


def _busy_cpu_seconds() -> float:
  """CPU seconds all cores spent on anything but idling, machine-wide."""
  times = psutil.cpu_times()
  return sum(times) - times.idle - getattr(times, 'iowait', 0.0)


def _program_usage(launcher: psutil.Process):
  """({node group: CPU seconds}, {node group: resident MB}) over the launcher and all
  its descendants."""
  cpu, memory = {}, {}
  for process in [launcher, *launcher.children(recursive=True)]:
    try:
      group = process.environ().get(sizing.NODE_ENV, 'launcher')
      times = process.cpu_times()
      resident = process.memory_info().rss / 2**20
    except psutil.Error:  # Exited meanwhile.
      continue
    cpu[group] = (cpu.get(group, 0.0) + times.user + times.system
                  + times.children_user + times.children_system)
    memory[group] = memory.get(group, 0.0) + resident
  return cpu, memory


def _learner_rows(workdir):
  path = os.path.join(workdir, 'logs', 'learner', 'logs.csv')
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return max(sum(1 for _ in f) - 1, 0)


def _snapshot(launcher, workdir):
  """Waits for the learner's next CSV row; (its learner_steps, time, program CPU and
  memory, busy CPU)."""
  rows = _learner_rows(workdir)
  while _learner_rows(workdir) == rows:
    if launcher.poll() is not None:
      raise RuntimeError(f'the program exited early ({launcher.returncode})')
    time.sleep(0.2)
  steps = plotting.read_csv(os.path.join(workdir, 'logs', 'learner', 'logs.csv'))
  return (steps['learner_steps'][-1], time.monotonic(),
          *_program_usage(psutil.Process(launcher.pid)), _busy_cpu_seconds())


def measure_program(demo_dir: str, program_flags) -> dict:
  workdir = tempfile.mkdtemp(prefix='metamimic_program_throughput_')
  command = [sys.executable, os.path.join(ROOT, 'launchpad_programs', 'imitate.py'),
             '--lp_launch_type=local_mp', f'--domain={_DOMAIN.value}',
             f'--workdir={workdir}', f'--demo_dir={demo_dir}',
             '--max_actor_steps=1000000000', *config_flags.config_flag_arguments(),
             *program_flags]
  print('program:', ' '.join(command[1:]), flush=True)
  launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    while _learner_rows(workdir) == 0:  # Compiled and stepping.
      if launcher.poll() is not None:
        raise RuntimeError(f'the program exited early ({launcher.returncode})')
      time.sleep(1)
    time.sleep(_WARMUP.value)
    steps0, t0, cpu0, memory0, busy0 = _snapshot(launcher, workdir)
    time.sleep(_WINDOW.value)
    steps1, t1, cpu1, memory1, busy1 = _snapshot(launcher, workdir)
  finally:
    os.killpg(launcher.pid, 9)
    launcher.wait()
  seconds = t1 - t0
  nodes = {group: cpu1[group] - cpu0.get(group, 0.0) for group in cpu1}
  nodes[OUTSIDE] = max((busy1 - busy0) - sum(nodes.values()), 0.0)
  return {'steps': steps1 - steps0, 'seconds': seconds, 'cpu': nodes,
          'memory': {group: (memory0.get(group, 0.0), memory1[group]) for group in memory1}}


def main(argv):
  program_flags = argv[1:]
  cpus = os.cpu_count()
  config = config_flags.config_from_flags(sizing.default_preset(cpus))
  domain = make_domain(_DOMAIN.value)
  demo_dir = _DEMO_DIR.value or tempfile.mkdtemp(prefix='metamimic_demos_')
  train, _ = demo_sets.prepare(domain, demo_dir,
                               generate_if_absent=_DEMO_DIR.value is None,
                               num_demos=_NUM_DEMOS.value)
  builder = MetaMimicBuilder(config, domain)
  spec = distributed.environment_spec(builder, train)
  busy, own, start = _busy_cpu_seconds(), sizing.process_cpu_seconds(), time.monotonic()
  solo_wall, solo_cpu = sizing.time_learner_steps(builder, spec, train, _SOLO_STEPS.value)
  solo_outside = ((_busy_cpu_seconds() - busy) - (sizing.process_cpu_seconds() - own)) / (
      time.monotonic() - start)
  print(f'domain {_DOMAIN.value}, preset {config_flags.preset_name(sizing.default_preset(cpus))}'
        f', {cpus} cores; agent flags {config_flags.config_flag_arguments() or "none"}')
  print(f'learner alone: {1 / solo_wall:.1f} steps/s ({1000 * solo_wall:.1f} ms wall, '
        f'{1000 * solo_cpu:.1f} ms CPU per step; outside load meanwhile '
        f'{solo_outside:.2f} cores)', flush=True)

  result = measure_program(demo_dir, program_flags)
  steps, seconds, cpu, memory = (result[key] for key in ('steps', 'seconds', 'cpu', 'memory'))
  rate = steps / seconds
  print(f'\nwindow {seconds:.0f} s: {steps:.0f} learner steps = {rate:.1f} steps/s')
  print(f'{"node":>20} {"CPU (cores)":>11} {"CPU s / learner step":>21} '
        f'{"resident MB, window start -> end":>33}')
  for group in sorted(cpu, key=lambda g: (g == OUTSIDE, -cpu[g])):
    start, end = memory.get(group, (None, None))
    print(f'{group:>20} {cpu[group] / seconds:>11.2f} {cpu[group] / max(steps, 1):>21.4f} '
          + (f'{start:>24.0f} -> {end:.0f}' if start is not None else ''))
  program_cpu = sum(v for g, v in cpu.items() if g != OUTSIDE)
  per_step = program_cpu / max(steps, 1)
  available = cpus - cpu[OUTSIDE] / seconds
  bound = available / per_step
  print(f'program CPU per learner step: {per_step:.4f} s; cores left by outside load: '
        f'{cpus} - {cpu[OUTSIDE] / seconds:.2f} = {available:.2f}')
  print(f'bound = {available:.2f} / {per_step:.4f} = {bound:.1f} learner steps/s')
  others = per_step - cpu['learner'] / max(steps, 1)
  print(f'with the learner at its CPU alone: {available:.2f} / ({solo_cpu:.4f} + '
        f'{others:.4f} others) = {available / (solo_cpu + others):.1f} learner steps/s')
  print(f'learner in program / alone: {rate:.1f} / {1 / solo_wall:.1f} = '
        f'{rate * solo_wall:.2f}   (target >= 0.8)')
  print(f'learner in program / bound: {rate:.1f} / {bound:.1f} = {rate / bound:.2f}   '
        '(target >= 0.9 where 0.8 of alone exceeds the bound)')


if __name__ == '__main__':
  cli.run(main)
