"""The portable core imports no Acme, Reverb, Launchpad, TensorFlow or simulator."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

CORE_MODULES = ('config', 'keys', 'specs', 'rewards', 'networks', 'losses', 'learning',
                'jax_utils', 'multihost')
FORBIDDEN = ('acme', 'reverb', 'launchpad', 'tensorflow', 'dm_control', 'mujoco',
             'rlax', 'distrax', 'tensorflow_probability')


def test_core_imports_only_jax_haiku_optax_chex_numpy():
  imports = '; '.join(f'import metamimic_jax.{m}' for m in CORE_MODULES)
  check = ('import sys; print(sorted({m.split(".")[0] for m in sys.modules} & '
           f'set({FORBIDDEN!r})))')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO_ROOT)] + os.environ.get('PYTHONPATH', '').split(os.pathsep)))
  result = subprocess.run([sys.executable, '-c', f'{imports}; {check}'], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
  assert result.stdout.strip() == '[]', result.stdout
