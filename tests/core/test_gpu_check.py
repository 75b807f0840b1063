"""benchmarks/gpu_check.sh (the device command of issue 11 item 4), run here on CPU at
tiny sizes with this environment's packages (no wheels): both benchmarks' output lands
under $OUT."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gpu_check_writes_both_benchmarks_output_to_out(tmp_path):
  out = tmp_path / 'out'
  result = subprocess.run(
      ['bash', os.path.join(ROOT, 'benchmarks', 'gpu_check.sh'), '--torsos=small',
       '--inputs=features', '--dtypes=float32', '--steps_per_call=1', '--batch_size=8',
       '--matmul_size=64', '--min_rounds=1'],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHON=sys.executable, OUT=str(out), WHEELS=str(tmp_path),
               PROFILE_FLAGS='--torso=mlp --inputs=features --batch_size=4 '
                             '--timed_calls=1 --top=3'))
  assert result.returncode == 0, result.stderr[-3000:]
  throughput = (out / 'throughput.txt').read_text()
  assert any(line.split()[:4] == ['small', 'features', 'float32', '1']
             for line in throughput.splitlines()), throughput
  profile = (out / 'profile.txt').read_text()
  assert 'mlp features float32, batch 4' in profile, profile
  assert profile.splitlines()[-4].split()[:2] == ['ms', 'events'], profile
