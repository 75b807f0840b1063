"""The real Launchpad program (local_mp: Reverb, Courier and Python processes)."""

import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ['--domain=point_mass', '--num_demos=12', '--batch_size=32',
              '--min_replay_size=100', '--policy_layers=32,32', '--critic_layers=32,32',
              '--eval_every_seconds=5', '--num_actors=2']


def _launch(workdir, *flags, timeout=420):
  command = [sys.executable, os.path.join(ROOT, 'launchpad_programs', 'imitate.py'),
             '--lp_launch_type=local_mp', f'--workdir={workdir}', *TINY_FLAGS, *flags]
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # The program's own processes, as a user would run them.
  return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                        cwd=ROOT, env=env)


def _rows(workdir, label):
  with open(os.path.join(workdir, 'logs', label, 'logs.csv')) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module', name='finished_run')
def _finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('imitate'))
  result = _launch(workdir, '--max_actor_steps=2000')
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return workdir, result.stdout + result.stderr


def test_program_ends_by_itself_after_learning_and_evaluating(finished_run):
  workdir, output = finished_run
  assert 'MetaMimic run finished after' in output
  assert f'report:      {os.path.join(workdir, "report.json")}' in output
  assert {'actor_0', 'actor_1'} <= set(os.listdir(os.path.join(workdir, 'logs')))
  with open(os.path.join(workdir, 'report.json')) as f:
    report = json.load(f)
  counts = report['counts']
  actor_steps, learner_steps = counts['actor_steps'], counts['learner_steps']
  assert actor_steps >= 2000
  # The SampleToInsertRatio limiter keeps samples (32 per learner step here) within
  # its error buffer (max(100 * 10% * 32, 2 * 32) = 320 samples = 10 learner steps) of
  # samples_per_insert (32) x (inserts - min_replay_size (100)). So learner steps track
  # inserts - 100. Inserts exceed the counted actor steps by the two actors' unfinished
  # episodes (at most 98 steps each); the learner lags its samples by the prefetched
  # batches and its counter's once-a-second sync (allowed: 100 steps).
  assert actor_steps - 100 - 10 - 100 <= learner_steps <= actor_steps + 2 * 98 - 100 + 10
  imitation = _rows(workdir, 'evaluator_imitation')
  assert _rows(workdir, 'evaluator_task')
  for key in ('actor_steps', 'learner_steps'):  # Evaluations follow training in order.
    steps = [float(row[key]) for row in imitation]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] >= 2000, key
  # The report's imitation reward is the coordinator's final evaluation, logged as an
  # evaluator row after the step limit.
  final = report['final_evaluation']['imitation_reward']
  assert any(float(row['actor_steps']) >= 2000 and
             abs(float(row['imitation_reward']) - final) <= 1e-6 * abs(final)
             for row in imitation), (final, imitation[-3:])
  for name in ('learner', 'counter', 'replay'):
    assert os.listdir(os.path.join(workdir, 'checkpoints', name))


@pytest.mark.slow  # Another launch of 2000 actor steps.
@pytest.mark.timeout(2 * 420 + 120)  # Run alone it also launches the fixture's program.
def test_same_command_resumes(finished_run):
  workdir, _ = finished_run
  with open(os.path.join(workdir, 'report.json')) as f:
    first = json.load(f)['counts']
  rows_before = len(_rows(workdir, 'evaluator_imitation'))
  result = _launch(workdir, '--max_actor_steps=4000')
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  output = result.stdout + result.stderr
  assert 'Restored checkpoint' in output and 'learner/ckpt_' in output
  with open(os.path.join(workdir, 'report.json')) as f:
    second = json.load(f)['counts']
  assert second['actor_steps'] >= 4000
  assert second['learner_steps'] > first['learner_steps']
  # The resumed run counts on from where the first ended (its limit was 2000 steps).
  resumed = _rows(workdir, 'evaluator_imitation')[rows_before:]
  assert resumed and min(int(float(r['actor_steps'])) for r in resumed) >= 2000


def test_an_incompatible_config_is_refused(finished_run):
  workdir, _ = finished_run
  result = _launch(workdir, '--max_actor_steps=4000', '--batch_size=64', timeout=120)
  assert result.returncode != 0
  assert 'incompatible configuration' in result.stderr
  assert 'batch_size: checkpoint 32, requested 64' in result.stderr
  assert 'Traceback' not in result.stderr


def test_bad_launches_stop_with_a_clear_message(tmp_path):
  result = _launch(str(tmp_path), '--domain=cartpole', timeout=120)
  assert result.returncode != 0 and 'cartpole' in result.stderr
  result = _launch('/proc/metamimic', timeout=120)
  assert result.returncode != 0 and '/proc/metamimic' in result.stderr
  assert 'Traceback' not in result.stderr
  os.makedirs(tmp_path / 'demos')
  (tmp_path / 'demos' / 'train.h5').write_bytes(b'not hdf5')
  (tmp_path / 'demos' / 'held_out.h5').write_bytes(b'not hdf5')
  result = _launch(str(tmp_path), f'--demo_dir={tmp_path / "demos"}', timeout=120)
  assert result.returncode != 0 and 'train.h5' in result.stderr
  assert 'Traceback' not in result.stderr
