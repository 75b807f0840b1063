"""Domains by name."""

from metamimic_jax.environments.base import Domain

# name: (module, class, constructor arguments that make it that domain).
_DOMAINS = {
    'point_mass': ('metamimic_jax.environments.point_mass', 'PointMassDomain', {}),
    'point_mass_pixels': ('metamimic_jax.environments.point_mass', 'PointMassDomain',
                          {'vision': True}),
    'jaco_stack': ('metamimic_jax.environments.jaco', 'JacoStackDomain', {}),
}

DOMAIN_NAMES = tuple(_DOMAINS)


def make_domain(name: str, **kwargs) -> Domain:
  """The domain called `name`; raises ValueError listing the known ones otherwise."""
  if name not in _DOMAINS:
    raise ValueError(f'unknown domain {name!r}; known domains: {", ".join(_DOMAINS)}')
  module_name, class_name, name_kwargs = _DOMAINS[name]
  module = __import__(module_name, fromlist=[class_name])
  return getattr(module, class_name)(**name_kwargs, **kwargs)
