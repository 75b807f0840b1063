"""Records seeded demonstrations with a domain's scripted demonstrator, in parallel."""

import multiprocessing
import time
from typing import Callable, List, Mapping, Optional, Sequence

from metamimic_jax import demonstrations as demos_lib
from metamimic_jax.environments import base
from metamimic_jax.environments import make_domain

ProgressFn = Callable[[int, int, float], None]  # (done, total, seconds elapsed)


def _record(args) -> demos_lib.Demonstration:
  domain_name, domain_kwargs, seed = args
  return base.record_demonstration(make_domain(domain_name, **domain_kwargs), seed)


def generate(domain_name: str, seeds: Sequence[int],
             domain_kwargs: Optional[Mapping[str, object]] = None,
             num_workers: int = 1,
             progress_fn: Optional[ProgressFn] = None) -> List[demos_lib.Demonstration]:
  """One demonstration per seed, in seed order, recorded by `num_workers` processes."""
  jobs = [(domain_name, dict(domain_kwargs or {}), seed) for seed in seeds]
  start = time.time()
  demos = []
  if num_workers <= 1:
    for job in jobs:
      demos.append(_record(job))
      if progress_fn:
        progress_fn(len(demos), len(jobs), time.time() - start)
    return demos
  # 'spawn': workers must not inherit the parent's TF/JAX/EGL state.
  with multiprocessing.get_context('spawn').Pool(num_workers) as pool:
    for demo in pool.imap(_record, jobs):
      demos.append(demo)
      if progress_fn:
        progress_fn(len(demos), len(jobs), time.time() - start)
  return demos


def log_progress(log_fn: Callable[[str], None], every: int = 10) -> ProgressFn:
  """A progress_fn that logs count, rate and ETA every `every` demos."""
  def progress(done: int, total: int, elapsed: float) -> None:
    if done % every and done != total:
      return
    rate = done / max(elapsed, 1e-9)
    log_fn(f'demonstrations {done}/{total} ({rate:.1f}/s, ETA {(total - done) / rate:.0f} s)')
  return progress
