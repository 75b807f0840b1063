"""Multi-host data parallelism for real: learner processes on localhost, CPU collectives."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from metamimic_jax import multihost
from tests.core import multihost_worker

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run_processes(num_processes_by_id, tmp_path, problem='linear', steps=STEPS):
  """Runs one tests/core/multihost_worker.py per entry (its num_processes); returns
  each one's CompletedProcess and output file."""
  address = f'localhost:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=os.pathsep.join(
                 [str(REPO_ROOT)] + os.environ.get('PYTHONPATH', '').split(os.pathsep)))
  outs = [tmp_path / f'process_{i}.npz' for i in range(len(num_processes_by_id))]
  # Output to files, not pipes: the processes wait on each other (collectives, the
  # shutdown barrier), so one blocked on a full pipe that nobody reads would hold
  # them all.
  logs = [tuple(open(tmp_path / f'process_{i}.{stream}', 'w+') for stream in ('out', 'err'))
          for i in range(len(num_processes_by_id))]
  workers = [subprocess.Popen(
      [sys.executable, '-m', 'tests.core.multihost_worker', address, str(n), str(i),
       problem, str(steps), str(out)], cwd=REPO_ROOT, env=env, stdout=stdout,
      stderr=stderr, text=True) for i, (n, out, (stdout, stderr)) in
             enumerate(zip(num_processes_by_id, outs, logs))]
  results = []
  try:
    for worker, (stdout, stderr) in zip(workers, logs):
      worker.wait(timeout=240)
      stdout.seek(0)
      stderr.seek(0)
      results.append(subprocess.CompletedProcess(worker.args, worker.returncode,
                                                 stdout.read(), stderr.read()))
  finally:
    for worker, files in zip(workers, logs):
      worker.kill()
      for f in files:
        f.close()
  return results, outs


def _check_two_processes_equal_one(problem, tmp_path, rtol, atol):
  """Two processes of 2 devices each, each on its half of every batch, end with the
  state that one process reaches on the whole batches, starting from process 0's seed
  (process 1's own seed is replaced by process 0's state)."""
  results, outs = _run_processes([2, 2], tmp_path, problem)
  for result in results:
    assert result.returncode == 0, result.stderr[-3000:]
  init, make_step, make_batch = multihost_worker.PROBLEMS[problem]()
  initial = init(jax.random.PRNGKey(0))
  state = initial
  step = jax.jit(make_step())
  for i in range(STEPS):
    state, _ = step(state, make_batch(i))
  expected = jax.tree.leaves(state)

  process_0, process_1 = ([f[f'arr_{j}'] for j in range(len(f.files))]
                          for f in map(np.load, outs))
  assert len(process_0) == len(expected)
  for a, b in zip(process_0, process_1):  # One reduction, one result everywhere.
    np.testing.assert_array_equal(a, b)
  for got, want in zip(process_0, expected):
    np.testing.assert_allclose(got, np.asarray(want), rtol=rtol, atol=atol)
  # The steps really moved the state, and not by less than the tolerance.
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
      jax.tree.leaves(initial), expected) if np.issubdtype(np.asarray(a).dtype,
                                                           np.floating)]
  assert max(moved) > 100 * atol


def test_two_processes_step_a_linear_model_as_one_process(tmp_path):
  # 4 weights, 3 plain SGD steps: the 4 devices' mean gradient differs from one
  # device's by float32 rounding of sums of 8 products, relative ~1e-7 per step.
  _check_two_processes_equal_one('linear', tmp_path, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # Compiles the MetaMimic step in 3 processes: ~20 CPU s, 1 min here.
def test_two_processes_take_the_same_metamimic_steps_as_one_process(tmp_path):
  # The 4 devices' gradients are averaged in another order than one device's sum over
  # the batch: float32 rounding (relative ~1e-7 a sum) reaches the parameters through 3
  # Adam steps, whose update g / sqrt(v) divides out the gradient's scale, so a
  # parameter with a tiny gradient can move by a noticeable fraction of its step
  # (lr 1e-4): absolute tolerance a hundredth of one step, relative 1e-5.
  _check_two_processes_equal_one('metamimic', tmp_path, rtol=1e-5, atol=1e-6)


def test_processes_given_different_counts_each_stop_with_one_line(tmp_path):
  results, _ = _run_processes([2, 3], tmp_path, steps=0)
  for result in results:
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert lines == [
        f'error: the 2 processes of the job at {result.args[3]} were given '
        'num_processes [2, 3] and process_id [0, 1] (by process): give every process '
        'the same num_processes and each its own process_id'], result.stderr[-3000:]
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('settings, message', [
    (dict(num_processes=2, process_id=2, coordinator_address='localhost:1234'),
     'process_id 2 is out of range for 2 processes (0 to 1)'),
    (dict(num_processes=2, process_id=-1, coordinator_address='localhost:1234'),
     'process_id -1 is out of range for 2 processes (0 to 1)'),
    (dict(num_processes=2, process_id=1),
     '2 processes need a coordinator_address (host:port of process 0)'),
    (dict(num_processes=0), 'num_processes must be >= 1, got 0'),
    (dict(num_processes=2, coordinator_address='localhost'),
     "coordinator_address must be host:port, got 'localhost'"),
])
def test_bad_process_settings_are_refused_naming_the_value(settings, message):
  with pytest.raises(ValueError) as error:
    multihost.ProcessSettings(**settings)
  assert str(error.value) == message


def test_batch_must_divide_over_every_device_of_the_job():
  devices = jax.local_devices()
  assert len(devices) == 2, 'conftest.py forces 2 host devices'
  assert multihost.process_batch_size(8, devices) == 8  # One process: all of it.
  assert multihost.process_batch_size(3, devices[:1]) == 3
  with pytest.raises(ValueError, match='^batch_size 7 must be divisible by the 2 '
                     'devices that share it$'):
    multihost.process_batch_size(7, devices)


def test_a_single_process_reports_itself_only_when_flagged():
  assert multihost.flagged_processes(False) == []
  assert multihost.flagged_processes(True) == [0]
