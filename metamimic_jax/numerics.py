"""Numerical health of a learner: a non-finite loss or parameter stops it, loudly.

The jitted step returns one extra scalar, whether its metrics and new parameters are all
finite; the host reads that scalar each step and, only when it is False, finds out
which metric or parameter group went bad.
"""

from typing import Callable, Dict, List, Mapping, Tuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

State = TypeVar('State')
Metrics = Dict[str, jnp.ndarray]


class NonFiniteError(FloatingPointError):
  """A learner step produced a NaN or infinite loss or parameter; the message says where."""


def all_finite(tree) -> jnp.ndarray:
  """Whether every floating-point leaf of `tree` is finite (a scalar bool)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
           if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def with_finite_flag(
    sgd_step: Callable[[State, object], Tuple[State, Metrics]],
    parameters: Callable[[State], Mapping[str, object]]
) -> Callable[[State, object], Tuple[State, Metrics, jnp.ndarray]]:
  """`sgd_step` that also returns all_finite of its metrics and `parameters(new_state)`."""

  def step(state, transitions):
    new_state, metrics = sgd_step(state, transitions)
    return new_state, metrics, all_finite((metrics, parameters(new_state)))

  return step


def non_finite_names(metrics: Mapping[str, object],
                     parameters: Mapping[str, object]) -> List[str]:
  """The metrics, then the parameter groups, that hold a NaN or infinite value."""
  bad = lambda tree: not all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(
      jax.device_get(tree)) if np.issubdtype(np.asarray(x).dtype, np.inexact))
  return ([f'{name} = {float(np.asarray(value).ravel()[0])}'
           for name, value in sorted(metrics.items()) if bad(value)] +
          [f'{name} (non-finite values)' for name, tree in parameters.items()
           if bad(tree)])


def check(finite, step: Callable[[], int], metrics: Mapping[str, object],
          parameters: Mapping[str, object]) -> None:
  """Raises NonFiniteError, naming the learner step and what went bad, unless `finite`.

  `step` gives the step's number; it and the names are only computed on failure.
  """
  if np.all(finite):
    return
  raise NonFiniteError(
      f'learner step {step()}: {", ".join(non_finite_names(metrics, parameters))}; '
      'stopped without keeping this state (the last checkpoint stays as it was)')
