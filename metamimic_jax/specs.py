"""Environment specs without Acme: what the core's networks need to know of the data.

`make_networks` reads any spec with `observations` (a tree of arrays with `shape` and
`dtype`) and `actions` (`shape`, `minimum`, `maximum`), so Acme's specs serve as they
are; these stand-ins let benchmarks and tests build networks without an environment.
"""

from typing import Any, NamedTuple, Optional, Tuple

import jax
import numpy as np

from metamimic_jax.keys import GOAL, OBSERVATION


class BoundedArray(NamedTuple):
  shape: Tuple[int, ...]
  dtype: Any
  minimum: Any
  maximum: Any


class EnvironmentSpec(NamedTuple):
  observations: Any  # A tree of jax.ShapeDtypeStruct (or anything with shape, dtype).
  actions: BoundedArray


def make_spec(feature_size: int, action_size: int, image_size: Optional[int] = None,
              goal_horizon: int = 1) -> EnvironmentSpec:
  """A demo-conditioned spec: `feature_size` features (and `image_size`² RGB pixels)
  in the observation and in each of `goal_horizon` goal frames; actions in [-1, 1]."""
  def part(*lead):
    arrays = {'features': jax.ShapeDtypeStruct(lead + (feature_size,), np.float32)}
    if image_size:
      arrays['pixels'] = jax.ShapeDtypeStruct(lead + (image_size, image_size, 3),
                                              np.uint8)
    return arrays
  return EnvironmentSpec(
      observations={OBSERVATION: part(), GOAL: part(goal_horizon)},
      actions=BoundedArray((action_size,), np.float32, -np.ones(action_size, np.float32),
                           np.ones(action_size, np.float32)))
