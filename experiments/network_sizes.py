"""Prints the parameter count of every torso, for features and for pixels.

    python experiments/network_sizes.py [--feature_size=73 --image_size=64]

Counts come from shapes only (jax.eval_shape): nothing is allocated. Imports only the
portable core.
"""

import dataclasses

from absl import flags
import jax
import numpy as np

from metamimic_jax import cli
from metamimic_jax import networks as networks_lib
from metamimic_jax import specs
from metamimic_jax.config import PRESETS, TORSOS

_FEATURE_SIZE = flags.DEFINE_integer('feature_size', 73, 'Features per frame (Jaco: 73).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Pixels per side (vision rows).')
_ACTION_SIZE = flags.DEFINE_integer('action_size', 9, 'Action dimensions (Jaco: 9).')


def parameter_counts(spec, config):
  """{agent: (policy, critic) parameter counts} for the imitation and task agents."""
  observation, action = networks_lib.dummy_inputs(spec)
  key = jax.random.PRNGKey(0)
  count = lambda shapes: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  networks = networks_lib.make_networks(spec, config)
  return {agent: (count(jax.eval_shape(n.policy.init, key, observation)),
                  count(jax.eval_shape(n.critic.init, key, observation, action)))
          for agent, n in (('imitation', networks.imitation), ('task', networks.task))}


def main(argv):
  del argv
  print('imitation policy and critic; all: both agents\' four networks')
  print(f'{"torso":>8} {"input":>9} {"policy":>12} {"critic":>12} {"all":>12}')
  for image_size in (None, _IMAGE_SIZE.value):
    spec = specs.make_spec(_FEATURE_SIZE.value, _ACTION_SIZE.value, image_size)
    for torso in TORSOS:
      config = dataclasses.replace(PRESETS['paper'], policy_torso=torso,
                                   critic_torso=torso)
      counts = parameter_counts(spec, config)
      policy, critic = counts['imitation']
      total = sum(sum(pair) for pair in counts.values())
      name = f'pixels {image_size}' if image_size else 'features'
      print(f'{torso:>8} {name:>9} {policy:>12,} {critic:>12,} {total:>12,}')


if __name__ == '__main__':
  cli.run(main)
