"""Faults and clean stops of the real local_mp program: nodes really killed (SIGKILL),
the launcher really signalled, the same command then resumes from the checkpoints."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from metamimic_jax import demo_sets
from metamimic_jax import sizing
from metamimic_jax import supervision
from metamimic_jax.environments import make_domain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One actor, tiny networks, checkpoints every 30 s (the first 30 s after the start).
FLAGS = ['--domain=point_mass', '--preset=cpu_small', '--action_repeat=1',
         '--policy_warmup_steps=0', '--train_task_policy', '--sigma=0.2', '--batch_size=32',
         '--samples_per_insert=32', '--min_replay_size=100', '--policy_layers=32,32',
         '--critic_layers=32,32', '--eval_every_seconds=5', '--num_actors=1',
         '--progress_seconds=5', '--checkpoint_minutes=0.5', '--max_actor_steps=1000000']
CHECKPOINT = re.compile(r'checkpoint: (?:learner step (\d+), )?actor steps (\d+)'
                        r'(?:, replay (\d+)(?:-(\d+))? items)?')
RESUMED = re.compile(r'learner starts at step (\d+): actor steps (\d+), replay (\d+) items')
LAUNCH_SECONDS = 600  # The machine is shared: starting 6 processes can take minutes.
# The launcher's longest stop: final checkpoint, then SIGTERM and SIGKILL; plus margin.
STOP_SECONDS = supervision.CHECKPOINT_SECONDS + supervision.STOP_SECONDS + 30


class Launch:
  """The program launched as a user would, its output in a file, its processes watched."""

  def __init__(self, workdir, demo_dir):
    self._log = tempfile.TemporaryFile('w+')
    env = dict(os.environ)
    env.pop('XLA_FLAGS', None)
    self.launcher = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'launchpad_programs', 'imitate.py'),
         '--lp_launch_type=local_mp', f'--workdir={workdir}', f'--demo_dir={demo_dir}',
         *FLAGS],
        stdout=self._log, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
        start_new_session=True)
    self.seen = {}  # pid -> psutil.Process of every node process seen.

  def output(self) -> str:
    self._log.seek(0)
    return self._log.read()

  def _watch(self) -> None:
    try:
      children = psutil.Process(self.launcher.pid).children(recursive=True)
    except psutil.Error:
      return
    for process in children:
      self.seen.setdefault(process.pid, process)

  def node(self, group: str) -> psutil.Process:
    """The live process of `group` (its METAMIMIC_NODE label)."""
    self._watch()
    for process in self.seen.values():
      try:
        if (process.is_running() and process.status() != psutil.STATUS_ZOMBIE and
            process.environ().get(sizing.NODE_ENV) == group):
          return process
      except psutil.Error:
        continue
    raise LookupError(group)

  def wait_for(self, pattern, timeout=LAUNCH_SECONDS, after=0):
    """The first match of `pattern` in the output from character `after` on."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      self._watch()
      match = re.compile(pattern).search(self.output(), after)
      if match:
        return match
      assert self.launcher.poll() is None, self.output()[-5000:]
      time.sleep(0.5)
    raise AssertionError(f'no {pattern!r} in {timeout} s:\n{self.output()[-5000:]}')

  def wait_for_checkpoint(self):
    """The next periodic checkpoint that holds learner steps; returns its numbers."""
    after = 0
    while True:
      match = self.wait_for(r'\[coordinator/0\] ' + CHECKPOINT.pattern, after=after)
      if int(match.group(1)) > 0:
        return _saved(match)
      after = match.end()

  def finish(self, timeout=STOP_SECONDS) -> int:
    try:
      return self.launcher.wait(timeout)
    finally:
      if self.launcher.poll() is None:
        os.killpg(self.launcher.pid, signal.SIGKILL)
        self.launcher.wait()

  def left_behind(self):
    return [p for p in self.seen.values()
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

  def close(self):
    if self.launcher.poll() is None:
      os.killpg(self.launcher.pid, signal.SIGKILL)
      self.launcher.wait()
    for process in self.left_behind():
      process.kill()
    self._log.close()


def _saved(match):
  """(learner step or None, actor steps, (least, most) replay items) of a checkpoint."""
  learner, actor, least, most = match.groups()
  return (None if learner is None else int(learner), int(actor),
          None if least is None else (int(least), int(most or least)))


@pytest.fixture(scope='module', name='demo_dir')
def _demo_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('demos'))
  demo_sets.prepare(make_domain('point_mass'), directory, generate_if_absent=True,
                    num_demos=12, num_workers=1)
  return directory


@pytest.fixture(name='launch')
def _launch(demo_dir):
  launches = []

  def start(workdir):
    launches.append(Launch(workdir, demo_dir))
    return launches[-1]

  yield start
  for launch in launches:
    launch.close()


def _resume_then_stop(launch, workdir, learner_step, actor_steps, replay_items, sig):
  """Resumes: the restored counts and replay are the checkpoints'; then stops by `sig`."""
  run = launch(workdir)
  resumed = run.wait_for(r'\[learner/0\] ' + RESUMED.pattern)
  assert int(resumed.group(1)) == learner_step, resumed.group(0)
  assert int(resumed.group(2)) == actor_steps, resumed.group(0)
  assert replay_items[0] <= int(resumed.group(3)) <= replay_items[1], resumed.group(0)
  # It goes on from there: a progress line beyond the restored actor steps.
  run.wait_for(rf'progress: (?!{actor_steps}/)\d+/', after=resumed.end())
  stopped_at = len(run.output())
  run.launcher.send_signal(sig)
  assert run.finish() == 128 + sig, run.output()[-5000:]
  output = run.output()[stopped_at:]
  final = CHECKPOINT.search(output)
  assert final and final.group(1) is not None, output[-3000:]  # Learner saved too.
  assert f'error: stopped by {signal.Signals(sig).name}' in output
  assert 'Killing entire runtime' not in run.output()
  assert not run.left_behind()


@pytest.mark.slow  # Two launches.
@pytest.mark.timeout(2 * LAUNCH_SECONDS + 2 * STOP_SECONDS)
def test_dead_learner_stops_the_program_and_the_run_resumes(launch, tmp_path):
  workdir = str(tmp_path)
  run = launch(workdir)
  learner_step, _, _ = run.wait_for_checkpoint()
  # A dead actor is restarted in place.
  actor = run.node('actor')
  actor.kill()
  run.wait_for(r'actor/0 killed by signal SIGKILL; restarting it \(restart 1 of 3\)',
               timeout=30)
  # A dead learner stops the program, after saving counter and replay.
  killed_at = len(run.output())
  run.node('learner').kill()
  killed = time.time()
  run.wait_for(r'learner/0 killed by signal SIGKILL: saving checkpoints', timeout=30,
               after=killed_at)
  assert time.time() - killed <= 30
  assert run.finish() == supervision.NODE_DIED_STATUS, run.output()[-5000:]
  output = run.output()[killed_at:]
  at_death = CHECKPOINT.search(output)
  assert at_death and at_death.group(1) is None, output[-3000:]  # No learner to save.
  assert 'error: node learner/0 killed by signal SIGKILL;' in output
  assert 'Re-run the same command to resume' in output
  assert not run.left_behind()
  _, actor_steps, replay_items = _saved(at_death)
  _resume_then_stop(launch, workdir, learner_step, actor_steps, replay_items,
                    signal.SIGTERM)


@pytest.mark.slow  # Two launches.
@pytest.mark.timeout(2 * LAUNCH_SECONDS + 2 * STOP_SECONDS)
def test_killed_process_group_resumes_from_the_last_checkpoint(launch, tmp_path):
  workdir = str(tmp_path)
  run = launch(workdir)
  saved = run.wait_for_checkpoint()
  os.killpg(run.launcher.pid, signal.SIGKILL)  # The launcher's group: nodes follow it.
  run.launcher.wait()
  deadline = time.time() + 10
  while run.left_behind() and time.time() < deadline:
    time.sleep(0.2)
  assert not run.left_behind()
  _resume_then_stop(launch, workdir, *saved, signal.SIGINT)


@pytest.mark.slow  # Two launches.
@pytest.mark.timeout(2 * LAUNCH_SECONDS + 2 * STOP_SECONDS)
def test_dead_replay_stops_the_program_and_the_run_resumes(launch, tmp_path):
  workdir = str(tmp_path)
  run = launch(workdir)
  _, _, replay_items = run.wait_for_checkpoint()
  killed_at = len(run.output())
  run.node('replay').kill()
  run.wait_for(r'replay/0 killed by signal SIGKILL: saving checkpoints', timeout=30,
               after=killed_at)
  assert run.finish() == supervision.NODE_DIED_STATUS, run.output()[-5000:]
  output = run.output()[killed_at:]
  at_death = CHECKPOINT.search(output)
  assert at_death and at_death.group(1) is not None, output[-3000:]
  assert at_death.group(3) is None  # The replay's own last checkpoint stays.
  assert not run.left_behind()
  learner_step = int(at_death.group(1))
  _resume_then_stop(launch, workdir, learner_step, int(at_death.group(2)), replay_items,
                    signal.SIGINT)
