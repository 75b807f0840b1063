"""Process environment for every entry point: imported before TensorFlow, JAX or MuJoCo.

MuJoCo renders headless through EGL unless told otherwise. TensorFlow (linked by Reverb
and Launchpad) is the CPU-only build, so it never takes an accelerator from JAX; its C++
logging is kept quiet. numpy's BLAS runs one thread: its only work here is small
(dm_control's inverse kinematics at every Jaco reset), where idle threads spinning for
work took 4x the reset's CPU (WORKSPACE_NOTES.md, "Acting loop speed").
"""

import os


def configure() -> None:
  os.environ.setdefault('MUJOCO_GL', 'egl')
  if os.environ['MUJOCO_GL'] == 'egl':
    os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')


configure()
