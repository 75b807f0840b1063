"""The real Launchpad program (local_mp: Reverb, Courier and Python processes)."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from metamimic_jax import adders
from metamimic_jax import distributed
from metamimic_jax import sizing
from tests.core import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ['--domain=point_mass', '--preset=cpu_small', '--action_repeat=1',
              '--policy_warmup_steps=0', '--train_task_policy', '--sigma=0.2',
              '--num_demos=12',
              '--batch_size=32', '--samples_per_insert=32', '--min_replay_size=100',
              '--policy_layers=32,32', '--critic_layers=32,32', '--eval_every_seconds=5',
              '--num_actors=2', '--progress_seconds=5']
GROUPS = {'replay', 'counter', 'learner', 'actor', 'evaluator', 'coordinator'}


def _command(workdir, *flags):
  return [sys.executable, os.path.join(ROOT, 'launchpad_programs', 'imitate.py'),
          '--lp_launch_type=local_mp', f'--workdir={workdir}', *TINY_FLAGS, *flags]


def _env():
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # The program's own processes, as a user would run them.
  return env


def _launch(workdir, *flags, timeout=420):
  return subprocess.run(_command(workdir, *flags), capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=_env())


def _least_thread_niceness(process):
  return min(os.getpriority(os.PRIO_PROCESS, thread.id) for thread in process.threads())


def _launch_watching_labels(workdir, *flags, timeout=420):
  """Like _launch; also returns {node label: the highest niceness all its threads had}.

  The output goes to a file, not a pipe: nobody reads a pipe while the program runs, and
  a full pipe would block the launcher. On timeout the whole process group is killed.
  """
  labels = {}
  with tempfile.TemporaryFile('w+') as log:
    launcher = subprocess.Popen(_command(workdir, *flags), stdout=log,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env=_env(), start_new_session=True)
    deadline = time.time() + timeout
    while launcher.poll() is None and time.time() < deadline:
      try:
        children = psutil.Process(launcher.pid).children(recursive=True)
      except psutil.Error:
        children = []
      for process in children:
        try:
          label = process.environ().get(sizing.NODE_ENV)
          labels[label] = max(labels.get(label, 0), _least_thread_niceness(process))
        except (psutil.Error, ProcessLookupError):
          continue
      time.sleep(0.5)
    if launcher.poll() is None:
      os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()
    log.seek(0)
    output = log.read()
  labels.pop(None, None)
  return launcher.returncode, output, labels


def _rows(workdir, label):
  with open(os.path.join(workdir, 'logs', label, 'logs.csv')) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module', name='finished_run')
def _finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('imitate'))
  returncode, output, labels = _launch_watching_labels(workdir, '--max_actor_steps=2000')
  assert returncode == 0, output[-6000:]
  return workdir, output, labels


def test_program_ends_by_itself_after_learning_and_evaluating(finished_run):
  workdir, output, _ = finished_run
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
  # episodes (at most 98 steps each), and fall short of them by the items each actor's
  # adder has not yet created or had confirmed when the run stops (it creates them in
  # groups); the learner lags its samples by the prefetched batches (allowed: 100
  # steps) and its counter's once-a-second sync: one second of its steps, ~250 on a
  # quiet machine (the report's count trailed the learner's own log by 254 once).
  deferred = 2 * (adders.TRANSITIONS_PER_WRITE - 1 + adders.MAX_IN_FLIGHT_ITEMS)
  one_second = learner_steps / counts['learner_walltime']

  def fewest_learner_steps(actor_steps):
    return actor_steps - deferred - 100 - 10 - 100 - one_second

  assert (fewest_learner_steps(actor_steps) <= learner_steps <=
          actor_steps + 2 * 98 - 100 + 10)
  imitation = _rows(workdir, 'evaluator_imitation')
  assert _rows(workdir, 'evaluator_task')
  for key in ('actor_steps', 'learner_steps'):  # Evaluations follow training in order.
    steps = [float(row[key]) for row in imitation]
    # Not from 0: under load the niced evaluator's first evaluation came after 99 actor
    # steps once, after 472 learner steps another time (training.run's curves start
    # with the untrained policy; the program's need not).
    assert steps == sorted(steps), key
  # The last evaluation follows the step limit, with the learner where the limiter
  # holds it then (not at 2000 learner steps: it tracks inserts - 100).
  last = imitation[-1]
  assert float(last['actor_steps']) >= 2000
  assert float(last['learner_steps']) >= fewest_learner_steps(float(last['actor_steps']))
  # The report's imitation reward is the coordinator's final evaluation, logged as an
  # evaluator row after the step limit.
  final = report['final_evaluation']['imitation_reward']
  assert any(float(row['actor_steps']) >= 2000 and
             abs(float(row['imitation_reward']) - final) <= 1e-6 * abs(final)
             for row in imitation), (final, imitation[-3:])
  for name in ('learner', 'counter', 'replay'):
    assert os.listdir(os.path.join(workdir, 'checkpoints', name))


def test_program_says_what_it_runs_and_shows_progress(finished_run):
  _, output, _ = finished_run
  assert 'MetaMimic on point_mass: preset cpu_small' in output
  assert '2 actors, until 2000 actor steps.' in output
  assert 'Roughly' in output and 'min, a rough estimate' in output
  # Features through the mlp torso: the learner's malloc returns what it frees.
  assert 'malloc returns freed memory' in output
  progress = [line for line in output.splitlines() if '[coordinator/0] progress: ' in line]
  assert progress, output[-3000:]
  assert any('actor steps/s, learner' in line and 'held-out imitation reward' in line
             and 'position error' in line and 'ETA' in line for line in progress), progress


def test_every_node_process_carries_its_group_label_and_priority(finished_run):
  _, _, labels = finished_run
  assert set(labels) == GROUPS
  # Evaluators and actors yield the CPU to the learner, every thread of them.
  assert labels['evaluator'] == distributed.EVALUATOR_NICENESS
  assert labels['actor'] == distributed.ACTOR_NICENESS
  assert labels['learner'] == labels['replay'] == 0


@pytest.mark.slow  # Another launch of 2000 actor steps.
@pytest.mark.timeout(2 * 420 + 120)  # Run alone it also launches the fixture's program.
def test_same_command_resumes(finished_run):
  workdir, _, _ = finished_run
  with open(os.path.join(workdir, 'report.json')) as f:
    first = json.load(f)['counts']
  rows_before = len(_rows(workdir, 'evaluator_imitation'))
  # Resumed with two environments per actor (batched acting; the first run had one).
  result = _launch(workdir, '--max_actor_steps=4000', '--envs_per_actor=2',
                   '--learner_keeps_freed_memory=yes')
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  output = result.stdout + result.stderr
  assert 'Restored checkpoint' in output and 'learner/ckpt_' in output
  assert 'malloc keeps freed memory' in output
  assert 'with 2 actors of 2 environments each' in output
  with open(os.path.join(workdir, 'report.json')) as f:
    second = json.load(f)['counts']
  assert second['actor_steps'] >= 4000
  assert second['learner_steps'] > first['learner_steps']
  # The resumed run counts on from where the first ended (its limit was 2000 steps).
  resumed = _rows(workdir, 'evaluator_imitation')[rows_before:]
  assert resumed and min(int(float(r['actor_steps'])) for r in resumed) >= 2000


@pytest.mark.parametrize('torsos, pixels, keeps', [
    (('mlp', 'mlp'), False, False), (('medium', 'medium'), False, False),
    (('mlp', 'large'), False, True), (('mlp', 'mlp'), True, True)])
def test_learners_of_images_or_the_large_torso_keep_freed_memory(torsos, pixels, keeps):
  config = dataclasses.replace(synthetic.TINY_CONFIG, policy_torso=torsos[0],
                               critic_torso=torsos[1])
  spec = synthetic.pixel_spec() if pixels else synthetic.point_mass_spec()
  assert sizing.learner_keeps_freed_memory(config, spec) == keeps


def test_an_incompatible_config_is_refused(finished_run):
  workdir, _, _ = finished_run
  result = _launch(workdir, '--max_actor_steps=4000', '--batch_size=64', timeout=120)
  assert result.returncode != 0
  assert 'incompatible configuration' in result.stderr
  assert 'batch_size: checkpoint 32, requested 64' in result.stderr
  assert 'Traceback' not in result.stderr


def test_too_many_actors_stop_with_one_line_before_any_node_starts(tmp_path):
  workdir = tmp_path / 'run'
  result = _launch(str(workdir), f'--num_actors={2 * os.cpu_count() + 1}', timeout=120)
  assert result.returncode != 0
  assert f'--num_actors={2 * os.cpu_count() + 1} is more than this' in result.stderr
  assert 'Traceback' not in result.stderr and 'MetaMimic on' not in result.stdout
  assert not workdir.exists()  # Nothing was prepared, generated or launched.


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


def test_progress_line_reports_rates_latest_evaluation_and_eta():
  progress = distributed.Progress(max_actor_steps=1000)
  assert (progress.line({'actor_steps': 100, 'learner_steps': 10}, 0.0, {})
          == 'progress: 100/1000 actor steps (10%)')
  line = progress.line({'actor_steps': 400, 'learner_steps': 40}, 30.0,
                       {'imitation_reward': 0.5, 'pinch_error_cm': 2.0,
                        'arm_joint_error_rad': 0.1, 'actor_steps': 300})
  assert line == ('progress: 400/1000 actor steps (40%), 10 actor steps/s, learner 1.0 '
                  'steps/s; held-out imitation reward 0.500, pinch error 2.0 cm (at 300 '
                  'actor steps); ETA 1 min')


@pytest.mark.timeout(300)
def test_ctrl_c_while_preparing_stops_with_one_line(tmp_path):
  """SIGINT during demo generation (before any node starts): 130, one line, no trace."""
  stderr_path = tmp_path / 'stderr.txt'
  with open(stderr_path, 'w') as stderr:
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'launchpad_programs', 'imitate.py'),
         '--lp_launch_type=local_mp', f'--workdir={tmp_path / "run"}',
         '--domain=point_mass', '--num_demos=2000'],
        stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT, env=_env())
    deadline = time.time() + 240
    while 'demonstrations' not in stderr_path.read_text() and time.time() < deadline:
      assert process.poll() is None, stderr_path.read_text()[-2000:]
      time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
  output = stderr_path.read_text()
  assert 'Traceback' not in output, output[-3000:]
  assert output.count('error: stopped by SIGINT before the program started') == 1
