"""The benchmarks' FLOP accounting and ratios (xla_timing.py), and a tiny learner_throughput run."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import xla_timing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_matmul_flops_from_cost_analysis_are_two_m_k_n():
  m, k, n = 8, 16, 4
  x, w = jnp.ones((m, k)), jnp.ones((k, n))
  compiled = jax.jit(jnp.matmul).lower(x, w).compile()
  assert xla_timing.compiled_flops(compiled) == 2 * 8 * 16 * 4


def test_reference_linear_counts_its_flops_and_computes_the_product():
  description, fn, args = xla_timing.reference_layer(
      'small', 'features', 4, 48, jnp.float32)
  call, flops = xla_timing.compiled_call(fn, args)
  assert description == 'linear 4x256x256'
  assert flops == 2 * 4 * 256 * 256
  np.testing.assert_allclose(call(), np.asarray(args[0]) @ np.asarray(args[1]),
                             rtol=1e-4, atol=1e-3)


def test_throughput_arithmetic():
  # 4 steps of 2 GFLOP in 0.5 s: 8 steps/s, 16 GFLOP/s; references at 20, 40 and 64
  # GFLOP/s.
  row = xla_timing.throughput(
      flops_per_step=2e9, steps_per_call=4, seconds_per_call=0.5, batch_size=256,
      layer_flops_per_second=20e9, square_flops_per_second=40e9,
      peak_flops_per_second=64e9)
  np.testing.assert_allclose(row, (8.0, 2048.0, 2.0, 16.0, 0.8, 0.4, 0.25))


def test_numpy_blas_threads_sets_the_count_openblas_reports():
  # numpy's wheels on Linux bundle OpenBLAS (1.x and 2.x, under different names).
  try:
    assert xla_timing.numpy_blas_threads(2) == 2
    assert xla_timing.numpy_blas_threads(1) == 1
  finally:
    xla_timing.numpy_blas_threads(1)  # process_env's setting, for the other tests.


def test_median_seconds_takes_turns_and_keeps_each_calls_median():
  order = []
  calls = [lambda: order.append('a'), lambda: order.append('b')]
  seconds = xla_timing.median_seconds(calls, min_rounds=3, min_seconds=0.0)
  assert order == ['a', 'b'] + ['a', 'b'] * 3  # A warm-up call each, then 3 rounds.
  assert len(seconds) == 2 and all(s >= 0 for s in seconds)


def test_repeated_makes_the_call_that_many_times():
  count = []
  assert xla_timing.repeated(lambda: count.append(1) or len(count), 4)() == 4
  assert len(count) == 4


@pytest.mark.slow
def test_tiny_run_prints_a_row_per_device_count_and_steps_per_call():
  result = subprocess.run(
      [sys.executable, 'benchmarks/learner_throughput.py', '--torsos=small',
       '--inputs=features', '--dtypes=float32', '--batch_size=8', '--steps_per_call=1,2',
       '--devices=1,2', '--min_rounds=1', '--matmul_size=64',
       '--cache_dir='],
      cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT}, capture_output=True, text=True,
      timeout=600, check=True)
  rows = [line.split() for line in result.stdout.splitlines()
          if line.split()[:2] == ['small', 'features']]
  assert [(row[3], row[4]) for row in rows] == [('1', '1'), ('1', '2'), ('2', '1'),
                                                 ('2', '2')]
  assert all(row[5] == 'default' and float(row[6]) > 0 and float(row[8]) > 0
             for row in rows)
  # The peak is the faster of XLA's and OpenBLAS's square matmul: no higher a ratio.
  assert 'BLAS reference: OpenBLAS' in result.stdout
  assert all(float(row[12]) <= float(row[11]) for row in rows)


def test_ctrl_c_stops_the_benchmark_with_one_line_and_status_130():
  """SIGINT while the large step compiles (tens of seconds): no traceback."""
  # A shell's background job (as this suite may be) starts with SIGINT ignored, which
  # its children inherit: the child restores Python's handler before the script runs.
  restore_ctrl_c = ('import runpy, signal, sys; '
                    'signal.signal(signal.SIGINT, signal.default_int_handler); '
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
  process = subprocess.Popen(
      [sys.executable, '-c', restore_ctrl_c, 'benchmarks/learner_throughput.py',
       '--torsos=large', '--inputs=features', '--dtypes=float32', '--steps_per_call=1',
       '--cache_dir='],
      cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT}, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  assert process.stdout.readline().startswith('device:')  # Running, about to compile.
  time.sleep(2)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  assert 'Traceback' not in stderr
  assert stderr.strip().splitlines()[-1] == 'Stopped by SIGINT (Ctrl-C).'
