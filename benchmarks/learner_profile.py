"""Where the learner step's time goes: its XLA ops, from one traced call.

    python benchmarks/learner_profile.py [--torso=medium] [--inputs=pixels]
        [--dtype=float32] [--batch_size=256] [--image_size=48] [--top=25]

Compiles the learner step as learner_throughput.py does (one device, one step a call),
times a few calls, then traces one with JAX's profiler, with XLA:CPU's per-op trace
events on (--xla_cpu_enable_xprof_traceme). The events of each instruction of the
compiled step are summed by op and output shape, the op being the instruction's name
without its number: a fusion's name says what XLA fused (transpose_copy_fusion).
Printed per row: ms in the traced call, events, and the share of the call's wall time.

On CPU, fusions, reduce-windows and copies run on the threads that run the step and
their events time them; large convolutions and dots run in Eigen's thread pool and
their events may time only the hand-off, so the wall time the rows do not cover is
theirs (and any wait). Imports only the portable core, like learner_throughput.py.
"""

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import sys
import tempfile
from typing import Dict, Iterable, List, NamedTuple

from absl import flags
import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import xla_timing
from metamimic_jax import cli
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax import process_env
from metamimic_jax import specs
from metamimic_jax.config import COMPUTE_DTYPES, PRESETS, TORSOS

_TORSO = flags.DEFINE_enum('torso', 'medium', TORSOS, 'Policy and critic torso.')
_INPUTS = flags.DEFINE_enum('inputs', 'pixels', xla_timing.INPUTS,
                            'features, or pixels with features.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', COMPUTE_DTYPES, 'Compute dtype.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Learner batch size.',
                                   lower_bound=1)
_FEATURE_SIZE = flags.DEFINE_integer('feature_size', 73, 'Features per frame.',
                                     lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 48, 'Pixels per side.', lower_bound=4)
_TIMED_CALLS = flags.DEFINE_integer('timed_calls', 3, 'Calls timed before the traced '
                                    'one (their median is printed).', lower_bound=1)
_TOP = flags.DEFINE_integer('top', 25, 'Rows printed.', lower_bound=1)

CPU_TRACE_FLAG = '--xla_cpu_enable_xprof_traceme=true'
# Perfetto's complete events ('X': a start and a duration, in microseconds).
_COMPLETE = 'X'
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.-]+) = (\w+\[[\d,]*\])\S* ([\w-]+)\(')
# A call's events span those of the instructions it calls (XLA:CPU runs a parallel
# fusion as a call of its partitions), which would count them twice.
_SPANNING_OPCODES = ('call',)


class OpTime(NamedTuple):
  op: str  # The instruction's name without its number.
  shape: str  # Its output's dtype[dims].
  milliseconds: float  # Summed over its events.
  events: int


def instruction_shapes(hlo_text: str) -> Dict[str, str]:
  """{instruction name: output dtype[dims]} of the array-valued instructions that are
  not calls."""
  return {match.group(1): match.group(2)
          for match in map(_INSTRUCTION.match, hlo_text.splitlines())
          if match and match.group(3) not in _SPANNING_OPCODES}


def op_name(instruction: str) -> str:
  """'transpose_copy_fusion.164.clone' -> 'transpose_copy_fusion'."""
  return re.sub(r'(\.\d+)*(\.clone)?$', '', instruction)


def op_events(events: Iterable[dict], shapes: Dict[str, str]) -> List[dict]:
  """The complete trace events of the instructions in `shapes`."""
  return [event for event in events
          if event.get('ph') == _COMPLETE and event.get('name') in shapes]


def op_times(events: Iterable[dict], shapes: Dict[str, str]) -> List[OpTime]:
  """Complete trace events of the instructions in `shapes`, summed by (op, output
  shape), longest first."""
  milliseconds, counts = collections.defaultdict(float), collections.Counter()
  for event in op_events(events, shapes):
    key = (op_name(event['name']), shapes[event['name']])
    milliseconds[key] += event['dur'] / 1e3
    counts[key] += 1
  return sorted((OpTime(op, shape, ms, counts[op, shape])
                 for (op, shape), ms in milliseconds.items()),
                key=lambda row: -row.milliseconds)


def traced_events(call) -> List[dict]:
  """The trace events of one `call()`, run to completion under JAX's profiler."""
  options = jax.profiler.ProfileOptions()
  options.host_tracer_level = 3  # XLA:CPU's per-op events are at this level.
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True,
                            profiler_options=options):
      jax.block_until_ready(call())
    path, = glob.glob(os.path.join(directory, '**', 'perfetto_trace.json.gz'),
                      recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  return trace['traceEvents'] if isinstance(trace, dict) else trace


def main(argv):
  del argv
  freed_memory_kept = process_env.keep_freed_memory()
  # Read when the CPU backend starts (it has not yet).
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {CPU_TRACE_FLAG}'
  config = dataclasses.replace(
      PRESETS['paper'], policy_torso=_TORSO.value, critic_torso=_TORSO.value,
      compute_dtype=_DTYPE.value, batch_size=_BATCH_SIZE.value)
  spec = specs.make_spec(_FEATURE_SIZE.value, 9,
                         _IMAGE_SIZE.value if _INPUTS.value == 'pixels' else None)
  networks = networks_lib.make_networks(spec, config)
  state = learning.init_training_state(jax.random.PRNGKey(0), networks,
                                       *networks_lib.dummy_inputs(spec), config)
  call, compile_seconds, compiled = xla_timing.compile_step(
      networks, config, state, spec, num_devices=1, steps_per_call=1)
  seconds, = xla_timing.median_seconds([call], _TIMED_CALLS.value, 0.0)
  events = traced_events(call)
  shapes = instruction_shapes(compiled.as_text())
  rows = op_times(events, shapes)
  timed = op_events(events, shapes)
  span_ms = (max((e['ts'] + e['dur'] for e in timed), default=0)
             - min((e['ts'] for e in timed), default=0)) / 1e3
  device = jax.devices()[0]
  print(f'device: {device.platform} {device.device_kind}, jax {jax.__version__}; '
        f'{_TORSO.value} {_INPUTS.value} {_DTYPE.value}, batch {_BATCH_SIZE.value}; '
        f'{xla_timing.compiled_flops(compiled) / 1e9:.1f} GFLOP a step, compile '
        f'{compile_seconds:.1f} s, freed memory kept: {"yes" if freed_memory_kept else "no"}')
  print(f'step {seconds * 1e3:.0f} ms (median of {_TIMED_CALLS.value}); traced call: '
        f'{span_ms:.0f} ms from its first op to its last, ops listed '
        f'{sum(r.milliseconds for r in rows):.0f} ms in {sum(r.events for r in rows)} '
        f'events ({len(rows)} op x shape groups)')
  if not rows:
    print('no per-op events in the trace (XLA:CPU emits them; other backends may not)')
    return
  print(f'{"ms":>8} {"events":>6} {"share":>6}  op, output shape')
  for row in rows[:_TOP.value]:
    print(f'{row.milliseconds:>8.1f} {row.events:>6} {row.milliseconds / span_ms:>6.1%}  '
          f'{row.op} {row.shape}')


if __name__ == '__main__':
  cli.run(main)
