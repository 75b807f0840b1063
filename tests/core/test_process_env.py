"""process_env.keep_freed_memory: XLA's freed buffers are reused, not mapped afresh."""

import os
import pathlib
import subprocess
import sys

import pytest

from metamimic_jax import process_env

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# In a fresh interpreter: the median page faults of 40 calls of a jitted op writing a
# 64 MB array (with freed memory kept, the first calls grow the heap: a result is freed
# after the next call has allocated its own).
_FAULTS_PER_CALL = """
import resource, statistics
{setup}
import jax, jax.numpy as jnp
x = jnp.ones(16 * 2**20, jnp.float32)
double = jax.jit(lambda x: x * 2)
faults = []
for _ in range(40):
  start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  double(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(statistics.median(faults))
"""
PAGES_PER_CALL = 64 * 2**20 // 4096


def median_faults_per_call(setup: str) -> float:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO_ROOT)] + os.environ.get('PYTHONPATH', '').split(os.pathsep)))
  result = subprocess.run([sys.executable, '-c', _FAULTS_PER_CALL.format(setup=setup)],
                          env=env, capture_output=True, text=True, timeout=300, check=True)
  return float(result.stdout.split()[-1])


@pytest.mark.skipif(not process_env.malloc_is_glibcs(), reason='mallopt is in glibc only')
def test_kept_freed_memory_is_reused_without_page_faults():
  kept = median_faults_per_call(
      'from metamimic_jax import process_env; assert process_env.keep_freed_memory()')
  assert kept < 0.05 * PAGES_PER_CALL, (kept, PAGES_PER_CALL)
