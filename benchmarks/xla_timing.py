"""Timing and FLOP accounting for the benchmarks: XLA's cost analysis, calls that take
turns on a shared machine, and achieved FLOP/s as ratios to reference ops."""

import time
from typing import Callable, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax.config import MLP_TORSO, PRESETS, TORSO_SIZES


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
  square_ratio: float  # Achieved FLOP/s / the square matmul's.


def throughput(flops_per_step: float, steps_per_call: int, seconds_per_call: float,
               batch_size: int, layer_flops_per_second: float,
               square_flops_per_second: float) -> Throughput:
  steps_per_second = steps_per_call / seconds_per_call
  achieved = flops_per_step * steps_per_second
  return Throughput(steps_per_second, steps_per_second * batch_size,
                    flops_per_step / 1e9, achieved / 1e9,
                    achieved / layer_flops_per_second,
                    achieved / square_flops_per_second)


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
