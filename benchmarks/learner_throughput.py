"""Learner throughput per torso: SGD steps/s, samples/s, FLOPs and the matmul peak.

    python benchmarks/learner_throughput.py [--torsos=small,medium,large]
        [--inputs=features,pixels] [--dtypes=float32,bfloat16] [--scan_steps=4]

For each torso, input (features, or 48 px pixels with features) and compute dtype it
times the jitted learner step (both agents, one device) called once per batch and, with
lax.scan, `--scan_steps` steps per call. FLOPs per SGD step come from XLA's cost
analysis of the compiled single step (it counts a scan's loop body once); achieved FLOP/s is printed beside this machine's matmul
peak for the same dtype, measured in the same run, as a ratio. Imports only the
portable core, so it runs on any modern JAX image (CPU, GPU or TPU).
"""

import dataclasses
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax import specs
from metamimic_jax.config import COMPUTE_DTYPES, PRESETS, TORSOS

_TORSOS = flags.DEFINE_list('torsos', ['small', 'medium', 'large'], 'Torsos to time.')
_INPUTS = flags.DEFINE_list('inputs', ['features', 'pixels'], 'features and/or pixels.')
_DTYPES = flags.DEFINE_list('dtypes', list(COMPUTE_DTYPES), 'Compute dtypes.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Learner batch size.')
_SCAN_STEPS = flags.DEFINE_integer('scan_steps', 4, 'SGD steps per call with scan.')
_CALLS = flags.DEFINE_integer('calls', 3, 'Timed calls per setting (best is kept).')
_FEATURE_SIZE = flags.DEFINE_integer('feature_size', 73, 'Features per frame.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 48, 'Pixels per side.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'Side of the peak matmul.')


def best_seconds(fn, *args, calls):
  """The fastest of `calls` timed calls (after one warm-up), and the last result."""
  result = jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(calls):
    start = time.perf_counter()
    result = jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best, result


def matmul_peak(dtype: str, size: int, calls: int) -> float:
  """FLOP/s of a jitted square matmul: this device's practical peak."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), dtype)
  seconds, _ = best_seconds(jax.jit(lambda a: a @ a), x, calls=calls)
  return 2 * size**3 / seconds


def flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per computation.
    analysis = analysis[0]
  return float(analysis['flops'])


def random_batch(spec, batch_size, rng, leading=()):
  def sample(s):
    shape = leading + (batch_size,) + tuple(s.shape)
    if s.dtype == np.uint8:
      return rng.integers(0, 256, shape).astype(np.uint8)
    return rng.uniform(-1, 1, shape).astype(np.float32)
  observation = lambda: jax.tree.map(sample, spec.observations)
  per_key = lambda: {'imitation': rng.uniform(0, 1, leading + (batch_size,)).astype(
      np.float32), 'task': rng.uniform(0, 1, leading + (batch_size,)).astype(np.float32)}
  return learning.Transition(observation(), sample(spec.actions), per_key(), per_key(),
                             observation())


def time_setting(torso, inputs, dtype, peaks):
  config = dataclasses.replace(PRESETS['paper'], policy_torso=torso, critic_torso=torso,
                               compute_dtype=dtype, batch_size=_BATCH_SIZE.value)
  spec = specs.make_spec(_FEATURE_SIZE.value, 9,
                         _IMAGE_SIZE.value if inputs == 'pixels' else None)
  networks = networks_lib.make_networks(spec, config)
  observation, action = networks_lib.dummy_inputs(spec)
  state = learning.init_training_state(jax.random.PRNGKey(0), networks, observation,
                                       action, config)
  rng = np.random.default_rng(0)
  sgd_step = learning.make_sgd_step(networks, config)
  rows, flops_per_step = [], None
  for scan in (1, _SCAN_STEPS.value):
    if scan == 1:
      step, batch = sgd_step, random_batch(spec, config.batch_size, rng)
    else:
      step = learning.scan_sgd_steps(sgd_step)
      batch = random_batch(spec, config.batch_size, rng, leading=(scan,))
    compiled = jax.jit(step).lower(state, batch).compile()
    seconds, _ = best_seconds(compiled, state, batch, calls=_CALLS.value)
    if scan == 1:  # XLA counts a scan's (while loop's) body once: use the plain step's.
      flops_per_step = flops(compiled)
    steps_per_second = scan / seconds
    achieved = flops_per_step * steps_per_second
    rows.append((torso, inputs, dtype, scan, steps_per_second,
                 steps_per_second * config.batch_size, flops_per_step / 1e9,
                 achieved / 1e9, achieved / peaks[dtype]))
  return rows


def main(argv):
  del argv
  for name, values, allowed in (('torsos', _TORSOS.value, TORSOS),
                                ('inputs', _INPUTS.value, ('features', 'pixels')),
                                ('dtypes', _DTYPES.value, COMPUTE_DTYPES)):
    unknown = sorted(set(values) - set(allowed))
    if unknown:
      raise app.UsageError(f'--{name}: unknown {", ".join(unknown)}; choose from '
                           f'{", ".join(allowed)}')
  device = jax.devices()[0]
  print(f'device: {device.platform} {device.device_kind} ({jax.device_count()} '
        f'devices), jax {jax.__version__}, batch {_BATCH_SIZE.value}')
  peaks = {dtype: matmul_peak(dtype, _MATMUL_SIZE.value, _CALLS.value)
           for dtype in _DTYPES.value}
  for dtype, peak in peaks.items():
    print(f'matmul peak {dtype}: {peak / 1e9:.1f} GFLOP/s '
          f'({_MATMUL_SIZE.value}x{_MATMUL_SIZE.value})')
  print(f'{"torso":>7} {"inputs":>8} {"dtype":>8} {"steps/call":>10} {"steps/s":>8} '
        f'{"samples/s":>9} {"GFLOP/step":>10} {"GFLOP/s":>8} {"/peak":>6}')
  for torso in _TORSOS.value:
    for inputs in _INPUTS.value:
      for dtype in _DTYPES.value:
        for row in time_setting(torso, inputs, dtype, peaks):
          print('{:>7} {:>8} {:>8} {:>10} {:>8.2f} {:>9.0f} {:>10.2f} {:>8.1f} '
                '{:>6.2f}'.format(*row), flush=True)


if __name__ == '__main__':
  app.run(main)
