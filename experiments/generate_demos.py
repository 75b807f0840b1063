r"""Records seeded demonstrations in parallel and writes train and held-out files.

  python experiments/generate_demos.py --domain=jaco_stack --num_demos=100 \
      --num_workers=2 --output_dir=/tmp/jaco_demos

writes /tmp/jaco_demos/train.h5 and held_out.h5 (see metamimic_jax/demonstrations.py).
Demonstration i is recorded with seed --seed + i. By default only successful
demonstrations (some task reward) are kept.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

import metamimic_jax  # pylint: disable=unused-import  # Sets the process environment.
from metamimic_jax import cli
from metamimic_jax import demo_sets
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import storage
from metamimic_jax.environments import DOMAIN_NAMES
from metamimic_jax.environments import make_domain

_DOMAIN = flags.DEFINE_enum('domain', 'jaco_stack', DOMAIN_NAMES, 'Domain to record in.')
_NUM_DEMOS = flags.DEFINE_integer('num_demos', 100, 'Episodes to record.', lower_bound=2)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the first episode.', lower_bound=0)
_NUM_WORKERS = flags.DEFINE_integer('num_workers', os.cpu_count(), 'Recording processes.',
                                    lower_bound=1)
_HELD_OUT_FRACTION = flags.DEFINE_float(
    'held_out_fraction', 0.1, 'Fraction of demonstrations held out for evaluation.',
    lower_bound=0.0, upper_bound=1.0)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where train.h5 and held_out.h5 go.')
_SUCCESSFUL_ONLY = flags.DEFINE_bool(
    'successful_only', True, 'Keep only demonstrations that earn the task reward.')
_VISION = flags.DEFINE_bool('vision', False, 'jaco_stack: record camera pixels too.')
_NUM_BRICKS = flags.DEFINE_integer('num_bricks', 2, 'jaco_stack: bricks to stack (2 or 3).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'jaco_stack: camera image size.')
flags.mark_flag_as_required('output_dir')

_JACO_FLAGS = ('vision', 'num_bricks', 'image_size')


def _domain_kwargs() -> dict:
  """The domain's constructor arguments; raises app.UsageError for misplaced flags."""
  if _DOMAIN.value != 'jaco_stack':
    misplaced = [name for name in _JACO_FLAGS if flags.FLAGS[name].present]
    if misplaced:
      raise app.UsageError(
          f'--{", --".join(misplaced)}: for --domain=jaco_stack only')
    return {}
  return {'vision': _VISION.value, 'num_bricks': _NUM_BRICKS.value,
          'image_size': _IMAGE_SIZE.value}


def _check_flags() -> None:
  fraction = _HELD_OUT_FRACTION.value
  if not 0.0 < fraction < 1.0:
    raise app.UsageError(f'--held_out_fraction must lie strictly between 0 and 1, '
                         f'got {fraction}')
  if os.path.exists(_OUTPUT_DIR.value) and not os.path.isdir(_OUTPUT_DIR.value):
    raise app.UsageError(f'--output_dir {_OUTPUT_DIR.value} exists and is not a directory')


def _format_seconds(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  return f'{minutes}m{seconds:02d}s' if minutes else f'{seconds}s'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  _check_flags()
  try:
    domain_kwargs = _domain_kwargs()
    domain = make_domain(_DOMAIN.value, **domain_kwargs)
  except ValueError as e:  # The domain refuses its arguments.
    raise app.UsageError(str(e)) from e

  try:
    storage.check_writable(_OUTPUT_DIR.value)
  except OSError as e:
    sys.exit(f'error: {e}')
  num_demos = _NUM_DEMOS.value
  logging.info('Recording %d %s demonstrations (up to %d frames each) with %d workers.',
               num_demos, domain.name, domain.demo_length, _NUM_WORKERS.value)
  start = time.time()
  try:
    demo_set = demo_sets.generate(
        domain, _OUTPUT_DIR.value, range(_SEED.value, _SEED.value + num_demos),
        _HELD_OUT_FRACTION.value, _NUM_WORKERS.value,
        successful_only=_SUCCESSFUL_ONLY.value, split_seed=_SEED.value)
  except (OSError, demos_lib.DemonstrationError) as e:
    sys.exit(f'error: {e}')

  elapsed = time.time() - start
  demos = demo_set.recorded
  successful = [d for d in demos if demo_sets.is_successful(d)]
  steps_to_success = [int(d.task_rewards.argmax()) + 1 for d in successful]
  mean_steps = f'{sum(steps_to_success) / len(steps_to_success):.1f}' if successful else '-'
  print(f'{domain.name}: {len(successful)}/{num_demos} demonstrations succeeded '
        f'({100 * len(successful) / num_demos:.0f}%), mean steps to success '
        f'{mean_steps}, mean length {sum(d.length for d in demos) / num_demos:.1f} '
        f'frames; recorded in {_format_seconds(elapsed)} '
        f'({num_demos / elapsed:.2f} demos/s).')
  print(f'Wrote {len(demo_set.train)} train and {len(demo_set.held_out)} held-out '
        f'demonstrations to {_OUTPUT_DIR.value}/{demo_sets.TRAIN_FILE} and '
        f'{demo_sets.HELD_OUT_FILE}.')


if __name__ == '__main__':
  cli.run(main)
