"""The demonstration generator, end to end on point_mass."""

import os
import subprocess
import sys

import pytest

from metamimic_jax import demo_sets
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import demonstrators
from metamimic_jax.environments import make_domain

SCRIPT = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'generate_demos.py')


def _run(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        timeout=300, check=False)


def test_writes_loadable_train_and_held_out_files(tmp_path):
  result = _run('--domain=point_mass', '--num_demos=8', '--seed=3', '--num_workers=2',
                '--held_out_fraction=0.25', '--nosuccessful_only',
                f'--output_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  train = demos_lib.load(str(tmp_path / 'train.h5'), 'point_mass')
  held_out = demos_lib.load(str(tmp_path / 'held_out.h5'), 'point_mass')
  assert len(train) == 6 and len(held_out) == 2
  assert sorted(d.seed for d in train + held_out) == list(range(3, 11))
  assert 'demonstrations succeeded' in result.stdout
  assert 'demonstrations 8/8' in result.stderr  # The progress log.


def test_keeps_only_successful_demos_by_default(tmp_path):
  result = _run('--domain=point_mass', '--num_demos=6', '--num_workers=2',
                f'--output_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  demos = (demos_lib.load(str(tmp_path / 'train.h5')) +
           demos_lib.load(str(tmp_path / 'held_out.h5')))
  assert demos and all(d.task_rewards.max() == 1.0 for d in demos)
  assert f'{len(demos)}/6 demonstrations succeeded' in result.stdout


@pytest.mark.parametrize('flag, message', [
    ('--held_out_fraction=1.5', 'held_out_fraction'),
    ('--held_out_fraction=0', 'strictly between 0 and 1'),
    ('--num_workers=0', 'num_workers'),
    ('--domain=nowhere', 'point_mass|point_mass_pixels|jaco_stack'),
    ('--vision', 'for --domain=jaco_stack only'),
])
def test_bad_flags_fail_clearly(tmp_path, flag, message):
  result = _run('--domain=point_mass', '--num_demos=4', f'--output_dir={tmp_path}', flag)
  assert result.returncode != 0
  assert message in result.stderr + result.stdout
  assert 'Traceback' not in result.stderr
  assert not os.listdir(tmp_path)


def test_bad_domain_arguments_fail_clearly(tmp_path):
  result = _run('--domain=jaco_stack', '--num_bricks=7', f'--output_dir={tmp_path}')
  assert result.returncode != 0
  assert 'num_bricks must be 2 or 3' in result.stderr
  assert 'Traceback' not in result.stderr


def test_too_few_successes_fail_with_one_clear_line(tmp_path):
  domain = make_domain('point_mass')
  succeeded = []  # Seeds from 0 until two neighbours are not both successful.
  while len(succeeded) < 2 or all(succeeded[-2:]):
    demo = demonstrators.record_demonstration(domain, len(succeeded))
    succeeded.append(demo_sets.is_successful(demo))
  seed = len(succeeded) - 2
  result = _run('--domain=point_mass', '--num_demos=2', f'--seed={seed}',
                '--num_workers=1', f'--output_dir={tmp_path}')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: only {sum(succeeded[seed:seed + 2])} of 2 point_mass demonstrations '
      'succeeded: too few to split into train and held-out sets; record more '
      '(--num_demos)')
  assert not os.listdir(tmp_path)
