"""Demonstration sets: record in parallel, keep the successful ones, split, save, load.

The one code path behind experiments/generate_demos.py and the programs' generation on
first use. A set is a directory holding `TRAIN_FILE` and `HELD_OUT_FILE`.
"""

import multiprocessing
import signal
import os
import sys
import time
from typing import List, NamedTuple, Sequence, Tuple

from absl import logging
import tqdm

from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import demonstrators
from metamimic_jax.environments.base import Domain

TRAIN_FILE = 'train.h5'
HELD_OUT_FILE = 'held_out.h5'
_FIRST_USE_SEED_STRIDE = 100_000  # Program seed s records demos s * stride + 0, 1, ...

Demos = List[demos_lib.Demonstration]


class DemoSet(NamedTuple):
  train: Demos
  held_out: Demos
  recorded: Demos  # Every recorded demonstration, failed ones included.


def is_successful(demo: demos_lib.Demonstration) -> bool:
  """Whether the demonstration earned the task reward."""
  return bool(demo.task_rewards.max() > 0)


def record(domain: Domain, seeds: Sequence[int], num_workers: int = 1) -> Demos:
  """One demonstration per seed, in seed order, recorded by `num_workers` processes.

  Shows a progress bar with an ETA on a terminal, a log line now and then otherwise.
  """
  jobs = [(domain, seed) for seed in seeds]
  with _Progress(len(jobs)) as progress:
    if num_workers <= 1:
      return [progress.done(_record(job)) for job in jobs]
    # 'spawn': workers must not inherit the parent's TF/JAX/EGL state. They ignore a
    # terminal's Ctrl-C: the parent decides, and its pool terminates them. A Ctrl-C
    # while the pool launches a worker would cut that worker off from its start-up data
    # (a traceback from the worker), so it is held until all have started.
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
      with multiprocessing.get_context('spawn').Pool(
          num_workers, initializer=_ignore_interrupts) as pool:
        signal.signal(signal.SIGINT, previous)
        if interrupted:
          raise KeyboardInterrupt
        return [progress.done(demo) for demo in pool.imap(_record, jobs)]
    finally:
      signal.signal(signal.SIGINT, previous)


def generate(domain: Domain, directory: str, seeds: Sequence[int],
             held_out_fraction: float = 0.1, num_workers: int = 1,
             successful_only: bool = True, split_seed: int = 0) -> DemoSet:
  """Records a demonstration per seed, splits the successful ones (or all) and saves them.

  Writes `directory`/TRAIN_FILE and HELD_OUT_FILE. Raises DemonstrationError, writing
  nothing, when fewer than two demonstrations are kept.
  """
  recorded = record(domain, seeds, num_workers)
  kept = [d for d in recorded if is_successful(d)] if successful_only else recorded
  if len(kept) < 2:
    raise demos_lib.DemonstrationError(
        f'only {len(kept)} of {len(recorded)} {domain.name} demonstrations succeeded: '
        'too few to split into train and held-out sets; record more (--num_demos)')
  train, held_out = demos_lib.split(kept, held_out_fraction, split_seed)
  os.makedirs(directory, exist_ok=True)
  train_path = os.path.join(directory, TRAIN_FILE)
  demos_lib.save(train_path, train, domain.name)
  try:
    demos_lib.save(os.path.join(directory, HELD_OUT_FILE), held_out, domain.name)
  except OSError:
    os.remove(train_path)  # A set is both files or neither.
    raise
  return DemoSet(train, held_out, recorded)


def load(domain: Domain, directory: str) -> Tuple[Demos, Demos]:
  """(train, held_out) from `directory`, checked against `domain`'s observations.

  Raises DemonstrationError for missing or bad files (nothing is half-loaded).
  """
  shapes = {k: s.shape for k, s in domain.make_environment(0).observation_spec().items()}
  return tuple(demos_lib.load(os.path.join(directory, name), domain.name, shapes)
               for name in (TRAIN_FILE, HELD_OUT_FILE))


def prepare(domain: Domain, directory: str, generate_if_absent: bool,
            num_demos: int = 200, held_out_fraction: float = 0.1, num_workers: int = 2,
            seed: int = 0) -> Tuple[Demos, Demos]:
  """(train, held_out) from `directory`, generated there first if asked and absent.

  Generation records `num_demos` demonstrations and keeps the successful ones. Raises
  DemonstrationError for missing or bad files, or too few successes.
  """
  if generate_if_absent and not os.path.exists(os.path.join(directory, TRAIN_FILE)):
    logging.info('Recording %d %s demonstrations into %s (keeping the successful ones)',
                 num_demos, domain.name, directory)
    first = seed * _FIRST_USE_SEED_STRIDE
    demo_set = generate(domain, directory, range(first, first + num_demos),
                        held_out_fraction, num_workers, split_seed=seed)
    logging.info('%d of %d demonstrations succeeded: %d train, %d held out',
                 len(demo_set.train) + len(demo_set.held_out), num_demos,
                 len(demo_set.train), len(demo_set.held_out))
  return load(domain, directory)


def _ignore_interrupts() -> None:
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _record(job: Tuple[Domain, int]) -> demos_lib.Demonstration:
  return demonstrators.record_demonstration(*job)


class _Progress:
  """Counts finished demos: a tqdm bar on a terminal, else a log line every 5%."""

  def __init__(self, total: int):
    self._total = total
    self._count = 0
    self._start = time.time()
    self._bar = (tqdm.tqdm(total=total, desc='demonstrations', unit='demo',
                           file=sys.stderr) if sys.stderr.isatty() else None)

  def done(self, demo: demos_lib.Demonstration) -> demos_lib.Demonstration:
    self._count += 1
    if self._bar is not None:
      self._bar.update()
    elif self._count == self._total or self._count % max(1, self._total // 20) == 0:
      rate = self._count / max(time.time() - self._start, 1e-9)
      logging.info('demonstrations %d/%d (%.2f/s, ETA %.0f s)', self._count,
                   self._total, rate, (self._total - self._count) / rate)
    return demo

  def __enter__(self) -> '_Progress':
    return self

  def __exit__(self, *exc_info) -> None:
    if self._bar is not None:
      self._bar.close()
