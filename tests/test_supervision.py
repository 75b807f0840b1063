"""The launcher's supervision of a small real local_mp program: nodes really killed."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from metamimic_jax import supervision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A program of three nodes: 'keeper' holds state and saves it when the launcher asks;
# 'worker' is stateless (restarted in place); 'stuck' never sees SIGTERM, as a node
# blocked inside C++ would not.
PROGRAM = textwrap.dedent('''
    import signal, sys, time
    sys.path.insert(0, {root!r})
    import launchpad as lp
    from launchpad.nodes.python import local_multi_processing
    from metamimic_jax import supervision

    class Keeper:
      def save(self):
        with open({saved!r}, 'w') as f:
          f.write('saved')
        return 'checkpoint: keeper saved'

    def stuck():
      signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
      print('stuck ignores SIGTERM', flush=True)
      time.sleep(10 ** 6)

    def main():
      program = lp.Program('toy')
      with program.group('keeper'):
        keeper = program.add_node(lp.CourierNode(Keeper))
      with program.group('worker'):
        program.add_node(lp.PyNode(lambda: print('worker up', flush=True) or
                                   lp.wait_for_stop()))
      with program.group('stuck'):
        program.add_node(lp.PyNode(stuck))
      resources = {{group: local_multi_processing.PythonProcess(
          env={{'TOY_NODE': group}}) for group in ('keeper', 'worker', 'stuck')}}
      checkpoint = lambda alive: (keeper.dereference().save() if 'keeper' in alive
                                  else 'checkpoint: nothing')
      sys.exit(supervision.Supervisor(program, resources, ['worker'], checkpoint).run())

    main()
''')


def _node(launcher, group):
  for process in psutil.Process(launcher.pid).children(recursive=True):
    try:
      if process.environ().get('TOY_NODE') == group:
        return process
    except psutil.Error:
      continue
  return None


def _wait_for(condition, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = condition()
    if value:
      return value
    time.sleep(0.2)
  raise AssertionError(f'{what} within {timeout} s')


@pytest.fixture(name='toy')
def _toy(tmp_path):
  script = tmp_path / 'toy.py'
  script.write_text(PROGRAM.format(root=ROOT, saved=str(tmp_path / 'saved')))
  log = open(tmp_path / 'log', 'w+')
  launcher = subprocess.Popen([sys.executable, str(script)], stdout=log,
                              stderr=subprocess.STDOUT, cwd=str(tmp_path),
                              start_new_session=True)

  def output():
    log.seek(0)
    return log.read()

  def started():
    return ('[worker/0] worker up' in output() and
            '[stuck/0] stuck ignores SIGTERM' in output() and
            all(_node(launcher, g) for g in ('keeper', 'worker', 'stuck')))

  _wait_for(started, 240, f'all nodes started: {output()}')
  nodes = {g: _node(launcher, g) for g in ('keeper', 'worker', 'stuck')}
  yield launcher, nodes, output, tmp_path / 'saved'
  if launcher.poll() is None:
    os.killpg(launcher.pid, signal.SIGKILL)
  launcher.wait()
  for process in nodes.values():
    if process.is_running():
      process.kill()
  log.close()


@pytest.mark.timeout(300)
def test_a_dead_node_is_restarted_or_stops_the_program_after_a_checkpoint(toy):
  launcher, nodes, output, saved = toy
  nodes['worker'].kill()
  _wait_for(lambda: _node(launcher, 'worker') not in (None, nodes['worker']), 30,
            'the worker restarted')
  restarted = _node(launcher, 'worker')
  assert 'worker/0 killed by signal SIGKILL; restarting it (restart 1 of 3)' in output()
  os.kill(nodes['stuck'].pid, signal.SIGKILL)
  killed = time.time()
  assert launcher.wait(60) == supervision.NODE_DIED_STATUS, output()
  # Noticed at once; the keeper saved; the others stopped, the stuck one by SIGKILL.
  assert time.time() - killed < 30 + supervision.STOP_SECONDS
  assert saved.read_text() == 'saved'
  lines = output().splitlines()
  assert 'stuck/0 killed by signal SIGKILL: saving checkpoints, then stopping every node.' in lines
  assert 'checkpoint: keeper saved' in lines
  # One line; the others left on SIGTERM (or, on a loaded machine, after STOP_SECONDS).
  assert re.fullmatch(
      r'error: node stuck/0 killed by signal SIGKILL; checkpoint: keeper saved; '
      r'(every node stopped|killed [a-z/0-9, ]+ after \d+ s)\. Re-run the same command to '
      r'resume from the checkpoints\.', lines[-1]), lines[-1]
  assert not any(p.is_running() for p in (nodes['keeper'], restarted))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_then_stops_every_node(toy, sig):
  launcher, nodes, output, saved = toy
  launcher.send_signal(sig)
  assert launcher.wait(60) == 128 + sig, output()
  assert saved.read_text() == 'saved'
  summary = re.fullmatch(
      rf'error: stopped by {signal.Signals(sig).name}; checkpoint: keeper saved; killed '
      rf'([a-z/0-9, ]+) after {supervision.STOP_SECONDS:g} s\.', output().splitlines()[-1])
  assert summary and 'stuck/0' in summary.group(1).split(', '), output()[-2000:]
  assert not any(p.is_running() for p in nodes.values())
  assert 'Killing entire runtime' not in output()


FINISHING_PROGRAM = textwrap.dedent('''
    import sys
    sys.path.insert(0, {root!r})
    import launchpad as lp
    from launchpad.nodes.python import local_multi_processing
    from metamimic_jax import supervision

    def finish():
      print('finishing', flush=True)
      lp.stop()

    program = lp.Program('toy')
    with program.group('waiter'):
      program.add_node(lp.PyNode(lp.wait_for_stop))
    with program.group('coordinator'):
      program.add_node(lp.PyNode(finish))
    resources = {{group: local_multi_processing.PythonProcess()
                 for group in ('waiter', 'coordinator')}}
    sys.exit(supervision.Supervisor(
        program, resources, checkpoint=lambda alive: 'checkpoint: unexpected').run())
''')


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_node_calling_lp_stop_ends_the_program_with_status_0(tmp_path):
  script = tmp_path / 'finishing.py'
  script.write_text(FINISHING_PROGRAM.format(root=ROOT))
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, cwd=str(tmp_path))
  output = result.stdout + result.stderr
  assert result.returncode == 0, output
  assert '[coordinator/0] finishing' in output
  assert 'checkpoint:' not in output and 'error:' not in output  # Its own end, saved.
