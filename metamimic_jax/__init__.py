"""MetaMimic in JAX/Haiku on Acme, Reverb and Launchpad."""

from metamimic_jax import process_env as _process_env  # Must run before TF/JAX imports.

del _process_env
