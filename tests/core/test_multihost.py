"""Multi-host data parallelism for real: learner processes on localhost, CPU collectives."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from metamimic_jax import learning
from metamimic_jax import multihost
from metamimic_jax import networks as networks_lib
from tests.core import synthetic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run_processes(num_processes_by_id, tmp_path, steps=STEPS):
  """Runs one tests/core/multihost_worker.py per entry (its num_processes); returns
  each one's CompletedProcess and output file."""
  address = f'localhost:{_free_port()}'
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO_ROOT)] + os.environ.get('PYTHONPATH', '').split(os.pathsep)))
  env.pop('XLA_FLAGS', None)
  outs = [tmp_path / f'process_{i}.npz' for i in range(len(num_processes_by_id))]
  workers = [subprocess.Popen(
      [sys.executable, '-m', 'tests.core.multihost_worker', address, str(n), str(i),
       str(steps), str(out)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i, (n, out) in
             enumerate(zip(num_processes_by_id, outs))]
  results = []
  for worker in workers:
    try:
      stdout, stderr = worker.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for w in workers:
        w.kill()
      raise
    results.append(subprocess.CompletedProcess(worker.args, worker.returncode, stdout,
                                               stderr))
  return results, outs


def test_two_processes_take_the_same_steps_as_one_process_with_the_whole_batch(
    tmp_path):
  results, outs = _run_processes([2, 2], tmp_path)
  for result in results:
    assert result.returncode == 0, result.stderr[-3000:]

  config = synthetic.TINY_CONFIG
  spec = synthetic.point_mass_spec()
  networks = networks_lib.make_networks(spec, config)
  initial = learning.init_training_state(  # Process 0's seed: every process takes it.
      jax.random.PRNGKey(0), networks, *networks_lib.dummy_inputs(spec), config)
  state = initial
  step = jax.jit(learning.make_sgd_step(networks, config))
  for i in range(STEPS):
    state, _ = step(state, synthetic.random_batch(spec, config.batch_size, seed=i))
  expected = jax.tree.leaves(state)

  process_0, process_1 = ([f[f'arr_{j}'] for j in range(len(f.files))]
                          for f in map(np.load, outs))
  assert len(process_0) == len(expected)
  for a, b in zip(process_0, process_1):  # One reduction, one result everywhere.
    np.testing.assert_array_equal(a, b)
  # The 4 devices' gradients are averaged in another order than one device's sum over
  # the batch: float32 rounding (relative 1e-7 a sum) reaches the parameters through 3
  # Adam steps, whose update g / sqrt(v) divides out the scale, so parameters with tiny
  # gradients can move by a noticeable fraction of their step (lr 1e-4): absolute
  # tolerance a hundredth of one step, relative 1e-5.
  for got, want in zip(process_0, expected):
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
  # The steps really moved the parameters (and process 1's own seed was replaced).
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
      jax.tree.leaves(initial.imitation.policy_params),
      jax.tree.leaves(state.imitation.policy_params))]
  assert max(moved) > 1e-5


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
  with pytest.raises(ValueError, match='^batch_size 7 must be divisible by the 2 '
                     'devices that share it$'):
    multihost.process_batch_size(7, devices)
