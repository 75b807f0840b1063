"""Domains by name."""

from metamimic_jax.environments.base import Domain

_DOMAINS = {
    'point_mass': ('metamimic_jax.environments.point_mass', 'PointMassDomain'),
    'jaco_stack': ('metamimic_jax.environments.jaco', 'JacoStackDomain'),
}

DOMAIN_NAMES = tuple(_DOMAINS)


def make_domain(name: str, **kwargs) -> Domain:
  """The domain called `name`; raises ValueError listing the known ones otherwise."""
  if name not in _DOMAINS:
    raise ValueError(f'unknown domain {name!r}; known domains: {", ".join(_DOMAINS)}')
  module_name, class_name = _DOMAINS[name]
  module = __import__(module_name, fromlist=[class_name])
  return getattr(module, class_name)(**kwargs)
