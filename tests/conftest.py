"""Test session set-up: two fake CPU devices so pmapped code runs data-parallel, and
XLA:CPU's code generated without LLVM's optimizations.

Most of a test's time is XLA compiling small steps, and most of a compile is LLVM
optimizing XLA's fused loops (a tiny pixel policy's init: 4.7 s, 0.9 s at O0); matmuls
and convolutions call Eigen's precompiled kernels either way. `make test` on 2 cores:
641 s against 760 s; long in-process runs lose (the slow learning run 124 s against
105). The Launchpad programs the tests launch run with XLA's defaults, as a user's do
(WORKSPACE_NOTES.md, "Suite time on the Zen 3").
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=2'
                           ' --xla_backend_optimization_level=0').strip()
os.environ['JAX_PLATFORMS'] = 'cpu'

import metamimic_jax  # pylint: disable=g-import-not-at-top,unused-import  # Sets the env.
