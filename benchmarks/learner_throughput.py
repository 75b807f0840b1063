"""Learner throughput per torso: SGD steps/s, samples/s, FLOPs and the matmul peak.

    python benchmarks/learner_throughput.py [--torsos=small,medium,large]
        [--inputs=features,pixels] [--dtypes=float32,bfloat16]
        [--steps_per_call=1,4] [--devices=1] [--batch_size=256]

For each torso, input (features, or `--image_size` px pixels with features), compute
dtype, device count and steps per call it times the learner step (both agents; one
device jitted, or pmapped over `--devices` with the batch split between them; K > 1
steps per call run under lax.scan, as `config.sgd_steps_per_call` does). FLOPs per SGD
step, and those of the reference ops below, come from XLA's cost analysis of the
compiled computation (of the single step: XLA counts a scan's loop body once, so the
scanned compile would under-report by K).

Achieved FLOP/s is divided by references of the same dtype: `/layer`, the FLOP/s of
the torso's most common layer alone at this batch (features: a Linear [B, width] x
[width, width]; pixels: a 3x3 conv of the second stage, [B, size/4, size/4, C] -> C);
`/square`, XLA's `--matmul_size` square matmul; and `/peak`, the faster of that and,
on CPU in float32, numpy's BLAS (OpenBLAS on all cores) on the same square: this
machine's matmul peak (XLA:CPU's own matmul reaches only ~0.75 of OpenBLAS's here;
WORKSPACE_NOTES.md, "The machine's matmul peak"). Each reference runs as many times in
a row as makes about the step call's FLOPs, so that it lasts about as long; the step
and the references take turns for at least `--min_rounds` rounds and `--min_seconds`,
and each keeps its median time (on a shared machine the load changes from second to
second: turns of similar length see the same load).
Compile seconds are printed per row; `--cache_dir` keeps XLA's compiles between runs.
`--compare_options` also times each one-device row compiled with those XLA options,
in the same rounds (rows 'options' beside 'default').

`--keep_freed_memory` (default on) calls `process_env.keep_freed_memory()` before JAX
starts: XLA's fresh buffers then reuse freed pages instead of faulting new ones (pixel
steps 1.4-1.7x here, and no slow runs of large; WORKSPACE_NOTES.md, "Page faults").

`--devices=2` on a CPU forces that many host devices (XLA's
--xla_force_host_platform_device_count), as the tests do.

Imports only the portable core, so it runs on any modern JAX image (CPU, GPU or TPU).
"""

import dataclasses
import os
import sys
import tempfile
from typing import Dict, Optional, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import xla_timing
from metamimic_jax import cli
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax import process_env
from metamimic_jax import specs
from metamimic_jax.config import COMPUTE_DTYPES, PRESETS, TORSOS

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

_TORSOS = flags.DEFINE_list('torsos', ['small', 'medium', 'large'], 'Torsos to time.')
_INPUTS = flags.DEFINE_list('inputs', list(xla_timing.INPUTS), 'features and/or pixels.')
_DTYPES = flags.DEFINE_list('dtypes', list(COMPUTE_DTYPES), 'Compute dtypes.')
_STEPS_PER_CALL = flags.DEFINE_list('steps_per_call', ['1', '4'],
                                    'SGD steps per call (K > 1: lax.scan).')
_DEVICES = flags.DEFINE_list('devices', ['1'], 'Device counts (K > 1: pmap).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Learner batch size (all devices).')
_MIN_ROUNDS = flags.DEFINE_integer('min_rounds', 5, 'Timed rounds per row, at least.')
_MIN_SECONDS = flags.DEFINE_float('min_seconds', 0.0, 'Timed seconds per row, at least.')
_FEATURE_SIZE = flags.DEFINE_integer('feature_size', 73, 'Features per frame.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 48, 'Pixels per side.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'Side of the square matmul.')
_COMPARE_OPTIONS = flags.DEFINE_list(
    'compare_options', [], 'XLA compiler options name=value: one-device rows are also '
    'timed compiled with them, in the same rounds (e.g. '
    'xla_cpu_enable_concurrency_optimized_scheduler=false).')
_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, "glibc's malloc keeps freed memory for XLA's next buffers.")
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', os.path.join(tempfile.gettempdir(), 'metamimic_jax_xla_cache'),
    "JAX's persistent compilation cache ('' for none).")


def time_setting(torso: str, inputs: str, dtype: str, devices: Sequence[int],
                 steps_per_call: Sequence[int],
                 compare_options: Optional[Dict[str, object]] = None,
                 use_blas: bool = False):
  """Rows for one torso, input and dtype: (devices, K, XLA options ('default' or
  'options': `compare_options`, timed in the same rounds), layer, xla_timing.Throughput,
  compile seconds, layer GFLOP/s, square GFLOP/s, BLAS GFLOP/s or None)."""
  config = dataclasses.replace(PRESETS['paper'], policy_torso=torso, critic_torso=torso,
                               compute_dtype=dtype, batch_size=_BATCH_SIZE.value)
  spec = specs.make_spec(_FEATURE_SIZE.value, 9,
                         _IMAGE_SIZE.value if inputs == 'pixels' else None)
  networks = networks_lib.make_networks(spec, config)
  observation, action = networks_lib.dummy_inputs(spec)
  state = learning.init_training_state(jax.random.PRNGKey(0), networks, observation,
                                       action, config)
  layer, layer_fn, layer_args = xla_timing.reference_layer(torso, inputs, config.batch_size,
                                                _IMAGE_SIZE.value, DTYPES[dtype])
  size = _MATMUL_SIZE.value
  square = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), DTYPES[dtype])
  (square_call, square_flops), (layer_call, layer_flops) = (
      xla_timing.compiled_call(jnp.matmul, (square, square)), xla_timing.compiled_call(layer_fn, layer_args))
  references = [(square_call, square_flops), (layer_call, layer_flops)]
  if use_blas and dtype == 'float32':
    square_on_host = np.asarray(square)
    references.append((lambda: square_on_host @ square_on_host, square_flops))
  flops_per_step = None
  for num_devices in devices:
    for k in steps_per_call:
      call, compile_seconds, compiled = xla_timing.compile_step(
          networks, config, state, spec, num_devices, k)
      if flops_per_step is None:
        single = (compiled if (num_devices, k) == (1, 1) else
                  xla_timing.compile_step(networks, config, state, spec, 1, 1)[2])
        flops_per_step = xla_timing.compiled_flops(single)
      del compiled
      variants = [('default', call, compile_seconds)]
      if compare_options and num_devices == 1:
        other, other_seconds, _ = xla_timing.compile_step(
            networks, config, state, spec, 1, k, compare_options)
        variants.append(('options', other, other_seconds))
      # References repeated to about the step call's FLOPs, so as to last about as long.
      times = [max(1, round(flops_per_step * k / flops)) for _, flops in references]
      seconds = xla_timing.median_seconds(
          [xla_timing.repeated(call, n) for (call, _), n in zip(references, times)] +
          [variant[1] for variant in variants], _MIN_ROUNDS.value, _MIN_SECONDS.value)
      square_rate, layer_rate, *blas_rate = (
          flops * n / t for (_, flops), n, t in zip(references, times, seconds))
      peak_rate = max([square_rate] + blas_rate)
      for (name, _, compile_seconds), step_seconds in zip(
          variants, seconds[len(references):]):
        yield (num_devices, k, name, layer,
               xla_timing.throughput(flops_per_step, k, step_seconds, config.batch_size,
                                     layer_rate, square_rate, peak_rate),
               compile_seconds, layer_rate / 1e9, square_rate / 1e9,
               blas_rate[0] / 1e9 if blas_rate else None)


def parse_options(options: Sequence[str]) -> Dict[str, object]:
  """XLA compiler options from 'name=value' strings (true/false and integers typed)."""
  parsed = {}
  for option in options:
    name, equals, value = option.partition('=')
    if not equals or not name:
      raise ValueError(f'{option!r} is not name=value')
    typed = {'true': True, 'false': False}.get(value.lower(), value)
    parsed[name] = int(value) if value.lstrip('-').isdigit() else typed
  return parsed


def main(argv):
  del argv
  try:
    compare_options = parse_options(_COMPARE_OPTIONS.value)
  except ValueError as e:
    raise app.UsageError(f'--compare_options: {e}')
  try:
    steps_per_call = [int(k) for k in _STEPS_PER_CALL.value]
    devices = [int(d) for d in _DEVICES.value]
  except ValueError as e:
    raise app.UsageError(f'--steps_per_call and --devices take integers: {e}')
  for name, values, allowed in (('torsos', _TORSOS.value, TORSOS),
                                ('inputs', _INPUTS.value, xla_timing.INPUTS),
                                ('dtypes', _DTYPES.value, COMPUTE_DTYPES)):
    unknown = sorted(set(values) - set(allowed))
    if unknown:
      raise app.UsageError(f'--{name}: unknown {", ".join(unknown)}; choose from '
                           f'{", ".join(allowed)}')
  if min(steps_per_call + devices) < 1:
    raise app.UsageError('--steps_per_call and --devices must be >= 1')
  uneven = [d for d in devices if _BATCH_SIZE.value % d]
  if uneven:
    raise app.UsageError(f'--batch_size {_BATCH_SIZE.value} does not divide over '
                         f'{uneven} devices')
  freed_memory_kept = _KEEP_FREED_MEMORY.value and process_env.keep_freed_memory()
  if max(devices) > 1:  # Read when the CPU backend starts (it has not yet).
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={max(devices)}')
  if _CACHE_DIR.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  if max(devices) > jax.device_count():
    raise app.UsageError(f'--devices {max(devices)}: only {jax.device_count()} devices')
  device = jax.devices()[0]
  # On CPU the BLAS square matmul gets the cores the learner step gets.
  blas_threads = (xla_timing.numpy_blas_threads(os.cpu_count())
                  if device.platform == 'cpu' else 0)
  print(f'device: {device.platform} {device.device_kind} ({jax.device_count()} '
        f'devices), jax {jax.__version__}, batch {_BATCH_SIZE.value}, square matmul '
        f'{_MATMUL_SIZE.value}, BLAS reference: '
        f'{f"OpenBLAS, {blas_threads} threads" if blas_threads else "none"}, cache '
        f'{_CACHE_DIR.value or "off"}, freed memory kept: '
        f'{"yes" if freed_memory_kept else "no"}')
  print(f'{"torso":>7} {"inputs":>8} {"dtype":>8} {"dev":>3} {"K":>2} {"xla":>7} {"steps/s":>8} '
        f'{"samples/s":>9} {"GFLOP/step":>10} {"GFLOP/s":>8} {"/layer":>6} '
        f'{"/square":>7} {"/peak":>5} {"compile s":>9}  layer GFLOP/s, square GFLOP/s '
        f'(XLA, BLAS)')
  for torso in _TORSOS.value:
    for inputs in _INPUTS.value:
      for dtype in _DTYPES.value:
        for (num_devices, k, options, layer, row, compile_seconds, layer_rate,
             square_rate, blas_rate) in time_setting(
                 torso, inputs, dtype, devices, steps_per_call, compare_options,
                 use_blas=blas_threads > 0):
          print(f'{torso:>7} {inputs:>8} {dtype:>8} {num_devices:>3} {k:>2} {options:>7} '
                f'{row.steps_per_second:>8.2f} {row.samples_per_second:>9.0f} '
                f'{row.gflop_per_step:>10.2f} {row.gflop_per_second:>8.1f} '
                f'{row.layer_ratio:>6.2f} {row.square_ratio:>7.2f} {row.peak_ratio:>5.2f} '
                f'{compile_seconds:>9.1f}  {layer} {layer_rate:.1f}, {square_rate:.1f}'
                f'{f", {blas_rate:.1f}" if blas_rate else ""}', flush=True)


if __name__ == '__main__':
  cli.run(main)
