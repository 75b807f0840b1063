"""Demonstration sets: only successful demos are kept, too few are refused clearly."""

import io
import os
import subprocess
import sys

import pytest

from metamimic_jax import demo_sets
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import demonstrators
from metamimic_jax.environments import make_domain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAIN = make_domain('point_mass')


def _succeeds(seed: int) -> bool:
  return demo_sets.is_successful(demonstrators.record_demonstration(DOMAIN, seed))


def test_first_use_generation_keeps_only_the_successful_demos(tmp_path, caplog):
  caplog.set_level('INFO')
  expected = {seed for seed in range(8) if _succeeds(seed)}
  assert 2 <= len(expected) < 8  # Some fail, enough succeed to split.
  train, held_out = demo_sets.prepare(DOMAIN, str(tmp_path), generate_if_absent=True,
                                      num_demos=8, held_out_fraction=0.25, num_workers=1)
  assert {d.seed for d in train + held_out} == expected
  assert held_out and all(d.task_rewards.max() == 1.0 for d in train + held_out)
  assert 'demonstrations 8/8' in caplog.text  # The progress line, off a terminal.
  again = demo_sets.prepare(DOMAIN, str(tmp_path), generate_if_absent=True, num_demos=99)
  assert [d.seed for d in again[0]] == [d.seed for d in train]  # Loaded, not redone.


def test_generation_keeps_every_demo_when_asked(tmp_path):
  demo_set = demo_sets.generate(DOMAIN, str(tmp_path), range(4), held_out_fraction=0.25,
                                successful_only=False)
  assert len(demo_set.train) == 3 and len(demo_set.held_out) == 1
  assert sorted(d.seed for d in demo_set.recorded) == [0, 1, 2, 3]


def test_progress_bar_on_a_terminal(monkeypatch):
  class Terminal(io.StringIO):
    def isatty(self):
      return True

  terminal = Terminal()
  monkeypatch.setattr(sys, 'stderr', terminal)
  demos = demo_sets.record(DOMAIN, [0, 1, 2])
  assert [d.seed for d in demos] == [0, 1, 2]
  assert 'demonstrations: 100%' in terminal.getvalue()
  assert '3/3' in terminal.getvalue()


def _seed_with_a_failure():
  """A program seed whose first two first-use demos are not both successful."""
  stride = demo_sets._FIRST_USE_SEED_STRIDE  # pylint: disable=protected-access
  for seed in range(1, 100):
    successes = sum(_succeeds(seed * stride + i) for i in range(2))
    if successes < 2:
      return seed, successes
  raise AssertionError('every seed succeeds')


def test_too_few_successes_are_refused_with_a_clear_message(tmp_path):
  seed, successes = _seed_with_a_failure()
  with pytest.raises(demos_lib.DemonstrationError,
                     match=f'only {successes} of 2 point_mass demonstrations succeeded: '
                           'too few to split'):
    demo_sets.prepare(DOMAIN, str(tmp_path), generate_if_absent=True, num_demos=2,
                      num_workers=1, seed=seed)
  assert not os.listdir(tmp_path)  # Nothing half-written.


@pytest.mark.parametrize('program', [
    ('experiments', 'train.py'),
    ('launchpad_programs', 'imitate.py'),
])
def test_programs_refuse_too_few_successes_before_starting(tmp_path, program):
  seed, successes = _seed_with_a_failure()
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, *program), '--domain=point_mass',
       '--num_demos=2', f'--seed={seed}', f'--workdir={tmp_path}'],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith(f'error: only {successes} of 2 point_mass demonstrations')
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'logs')  # No node or loop started.
