"""Process environment for every entry point: imported before TensorFlow, JAX or MuJoCo.

MuJoCo renders headless through EGL unless told otherwise. TensorFlow (linked by Reverb
and Launchpad) is the CPU-only build, so it never takes an accelerator from JAX; its C++
logging is kept quiet. numpy's BLAS runs one thread: its only work here is small
(dm_control's inverse kinematics at every Jaco reset), where idle threads spinning for
work took 4x the reset's CPU (WORKSPACE_NOTES.md, "Acting loop speed").

`keep_freed_memory` (called by the throughput benchmark, and by the program's learner
for images and the large torso) makes glibc's malloc keep the memory it frees.
"""

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h); a trim threshold of -1 turns trimming off.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def malloc_is_glibcs() -> bool:
  return platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc'


def keep_freed_memory() -> bool:
  """Makes glibc's malloc reuse freed memory instead of returning it; False elsewhere.

  XLA:CPU allocates each computation's outputs and temporaries afresh, and glibc maps
  blocks over 32 MB (and, from threads, smaller ones) as new pages and unmaps them when
  freed, so every call paid a page fault for each 4 KB it wrote: on this VM a 19 MB copy
  ran at 3.5 GB/s instead of 21 and the learner step from pixels 1.4-1.7x slower
  (WORKSPACE_NOTES.md, "Page faults"). One heap (one arena, no mmap), never trimmed,
  reuses the same pages instead: a process keeps the most memory it has used, and its
  threads share one arena (the small preset's learner with Reverb's threads beside it
  ran ~10% slower). Call it before JAX runs anything.
  """
  if not malloc_is_glibcs():
    return False
  mallopt = ctypes.CDLL(None).mallopt
  return all(mallopt(parameter, value) == 1 for parameter, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


def configure() -> None:
  os.environ.setdefault('MUJOCO_GL', 'egl')
  if os.environ['MUJOCO_GL'] == 'egl':
    os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')


configure()
