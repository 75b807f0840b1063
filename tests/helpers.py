"""Shared test fixtures: tiny configs and point-mass demonstrations."""

import functools

from acme import specs

from metamimic_jax import demonstrators
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import make_domain
from tests.core.synthetic import TINY_CONFIG


@functools.lru_cache(maxsize=None)
def point_mass_demos(num: int = 4, first_seed: int = 0):
  domain = make_domain('point_mass')
  return tuple(demonstrators.record_demonstration(domain, s)
               for s in range(first_seed, first_seed + num))


def point_mass_setup(config: MetaMimicConfig = TINY_CONFIG, num_demos: int = 4):
  """(builder, demo environment, environment spec) on the point-mass domain."""
  builder = MetaMimicBuilder(config, make_domain('point_mass'))
  environment = builder.make_demo_environment(point_mass_demos(num_demos), seed=0)
  return builder, environment, specs.make_environment_spec(environment)
