"""Timing and FLOP accounting for the benchmarks: the learner step compiled on random
batches, XLA's cost analysis, calls that take turns on a shared machine, and achieved
FLOP/s as ratios to reference ops."""

import ctypes
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax import jax_utils
from metamimic_jax import learning
from metamimic_jax.config import MLP_TORSO, PRESETS, TORSO_SIZES

INPUTS = ('features', 'pixels')
AXIS = 'devices'  # The pmapped step's.


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled computation, from XLA's cost analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per computation.
    analysis = analysis[0]
  return float(analysis['flops'])


def median_seconds(calls: Sequence[Callable[[], object]], min_rounds: int,
                   min_seconds: float) -> List[float]:
  """Each call's median time over at least `min_rounds` rounds lasting `min_seconds`
  in all, the calls taking turns within a round (after one warm-up call each), so that
  a shared machine's changing load weighs on all of them alike."""
  for call in calls:
    jax.block_until_ready(call())
  times = []
  while len(times) < min_rounds or np.sum(times) < min_seconds:
    times.append([])
    for call in calls:
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[-1].append(time.perf_counter() - start)
  return list(np.median(times, axis=0))


def repeated(call: Callable[[], object], times: int) -> Callable[[], object]:
  """`call` made `times` times, each run to completion."""
  return lambda: [jax.block_until_ready(call()) for _ in range(times)][-1]


class Throughput(NamedTuple):
  steps_per_second: float
  samples_per_second: float
  gflop_per_step: float
  gflop_per_second: float
  layer_ratio: float  # Achieved FLOP/s / the layer's FLOP/s alone.
  square_ratio: float  # Achieved FLOP/s / XLA's square matmul's.
  peak_ratio: float  # Achieved FLOP/s / the fastest square matmul's (XLA's or BLAS's).


def throughput(flops_per_step: float, steps_per_call: int, seconds_per_call: float,
               batch_size: int, layer_flops_per_second: float,
               square_flops_per_second: float,
               peak_flops_per_second: float) -> Throughput:
  steps_per_second = steps_per_call / seconds_per_call
  achieved = flops_per_step * steps_per_second
  return Throughput(steps_per_second, steps_per_second * batch_size,
                    flops_per_step / 1e9, achieved / 1e9,
                    achieved / layer_flops_per_second,
                    achieved / square_flops_per_second,
                    achieved / peak_flops_per_second)


# numpy's OpenBLAS, by wheel: numpy 1.x's symbols, numpy 2.x's (scipy-openblas), a
# system OpenBLAS's.
_OPENBLAS_PREFIXES = ('openblas', 'scipy_openblas')
_OPENBLAS_SUFFIXES = ('64_', '')


def numpy_blas_threads(count: int) -> int:
  """Gives numpy's OpenBLAS `count` threads (process_env starts it with one) and
  returns the count it then reports; 0 where no OpenBLAS is loaded (not Linux, or
  another BLAS)."""
  try:
    with open('/proc/self/maps') as maps:
      paths = sorted({line.split(maxsplit=5)[-1].strip() for line in maps
                      if 'openblas' in line})
  except OSError:
    return 0
  for path in paths:
    try:
      library = ctypes.CDLL(path)
    except OSError:  # Not a library ('... (deleted)').
      continue
    for prefix in _OPENBLAS_PREFIXES:
      for suffix in _OPENBLAS_SUFFIXES:
        setter = getattr(library, f'{prefix}_set_num_threads{suffix}', None)
        getter = getattr(library, f'{prefix}_get_num_threads{suffix}', None)
        if setter and getter:
          setter(count)
          return getter()
  return 0


def compiled_call(fn, args) -> Tuple[Callable[[], object], float]:
  """A call of the compiled `fn(*args)`, and its FLOPs."""
  compiled = jax.jit(fn).lower(*args).compile()
  return lambda: compiled(*args), compiled_flops(compiled)


def reference_layer(torso: str, inputs: str, batch_size: int, image_size: int,
                    dtype) -> Tuple[str, Callable, Tuple]:
  """The torso's most common layer at this batch: (description, fn, args)."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
  config = PRESETS['paper']
  if inputs == 'features':
    width = (max(config.critic_layer_sizes) if torso == MLP_TORSO
             else TORSO_SIZES[torso].width)
    return (f'linear {batch_size}x{width}x{width}', jnp.matmul,
            (normal(batch_size, width), normal(width, width)))
  channels = (config.conv_channels if torso == MLP_TORSO
              else TORSO_SIZES[torso].conv_channels)[1]
  side = -(-image_size // 4)  # Two SAME max-pools of stride 2.
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return (f'conv3x3 {batch_size}x{side}x{side}x{channels}', conv,
          (normal(batch_size, side, side, channels), normal(3, 3, channels, channels)))


def random_batch(spec, batch_size: int, rng: np.random.Generator,
                 leading: Tuple[int, ...] = ()) -> learning.Transition:
  """Uniform random transitions of `spec`, [*leading, batch_size, ...]."""
  def sample(s):
    shape = leading + (batch_size,) + tuple(s.shape)
    if s.dtype == np.uint8:
      return rng.integers(0, 256, shape).astype(np.uint8)
    return rng.uniform(-1, 1, shape).astype(np.float32)
  observation = lambda: jax.tree.map(sample, spec.observations)
  per_key = lambda: {key: rng.uniform(0, 1, leading + (batch_size,)).astype(np.float32)
                     for key in ('imitation', 'task')}
  return learning.Transition(observation(), sample(spec.actions), per_key(), per_key(),
                             observation())


def compile_step(networks, config, state, spec, num_devices: int, steps_per_call: int,
                 compiler_options: Optional[Dict[str, object]] = None
                 ) -> Tuple[Callable[[], object], float, object]:
  """A call of K steps on D devices (state threaded from call to call), its compile
  seconds, and the compiled computation; `compiler_options` (XLA's, one device only)."""
  rng = np.random.default_rng(0)
  leading = () if steps_per_call == 1 else (steps_per_call,)
  if num_devices == 1:
    step = learning.make_sgd_step(networks, config)
    if steps_per_call > 1:
      step = learning.scan_sgd_steps(step)
    batch = jax.device_put(random_batch(spec, config.batch_size, rng, leading))
    transform = jax.jit(step)
  else:
    devices = jax.devices()[:num_devices]
    step = learning.make_sgd_step(networks, config, axis_name=AXIS)
    if steps_per_call > 1:
      step = learning.scan_sgd_steps(step)
    batch = jax_utils.put_sharded(
        jax_utils.shard(random_batch(spec, config.batch_size * steps_per_call, rng),
                        num_devices, steps_per_call), devices)
    state = jax_utils.replicate(state, devices)
    transform = jax.pmap(step, axis_name=AXIS, devices=devices)
  start = time.perf_counter()
  compiled = transform.lower(state, batch).compile(compiler_options)
  compile_seconds = time.perf_counter() - start
  holder = [state]

  def call():
    holder[0], metrics = compiled(holder[0], batch)
    return metrics

  return call, compile_seconds, compiled
