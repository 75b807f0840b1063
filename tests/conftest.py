"""Test session set-up: two fake CPU devices so pmapped code runs data-parallel."""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=2').strip()
os.environ['JAX_PLATFORMS'] = 'cpu'

import metamimic_jax  # pylint: disable=g-import-not-at-top,unused-import  # Sets the env.
