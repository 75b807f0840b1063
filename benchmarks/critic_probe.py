r"""Does the imitation critic learn what an action does? A probe on Jaco.

  .venv/bin/python benchmarks/critic_probe.py --demo_dir=runs/jaco_demos \
      --env_steps=16000 --action_repeat=4 --sigma=1.0

Trains only the critics (the policies stay at their initialisation, about zero
velocity) on the exploration of that near-zero policy plus Gaussian noise, then compares
the critic's action gradient dQ/da at a = 0 with the direction to the goal on held-out
demonstrations: the arm joint velocities that would reach the goal's joint angles at the
next decision. The policy update follows dQ/da, so a cosine near 0 (or below) means the
policy can only drift, whatever its learning rate. Prints the mean cosine and the
fraction of states where it is positive, with the settings, next to the same probe at
the critic's initialisation (0 learner steps).
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import checkpointing
from metamimic_jax import cli
from metamimic_jax import demo_sets
from metamimic_jax import flags as config_flags
from metamimic_jax import losses
from metamimic_jax import networks as networks_lib
from metamimic_jax import training
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.environments import jaco
from metamimic_jax.environments import make_domain
from metamimic_jax.keys import GOAL, OBSERVATION

from absl import flags
from acme import specs
import jax
import jax.numpy as jnp
import numpy as np

_DEMO_DIR = flags.DEFINE_string('demo_dir', 'runs/jaco_demos', 'train.h5, held_out.h5.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/metamimic_critic_probe', 'Workdir.')
_ENV_STEPS = flags.DEFINE_integer('env_steps', 16_000, 'Agent steps (decisions).')
_STATES = flags.DEFINE_integer('probe_states', 60, 'Probed states per held-out demo.')
_FRAME_SECONDS = 0.04  # Jaco's control period (25 Hz).


def probe(builder, networks, critic_params, held_out) -> dict:
  """cos(dQ/da at a = 0, direction to the goal) over stationary-arm rollouts."""
  environment = builder.make_demo_environment(held_out, seed=0)
  spec = specs.make_environment_spec(environment)
  maximum = spec.actions.maximum[:6]
  seconds = builder.config.action_repeat * _FRAME_SECONDS

  @jax.jit
  def dq_da(observation, action):
    q = lambda a: losses.mean_value(
        networks.critic.apply(critic_params, observation, a), networks.atoms).sum()
    return jax.grad(q)(action)

  zeros = np.zeros(spec.actions.shape, np.float32)
  cosines = []
  for index in range(len(held_out)):
    environment.select_demonstration(index)
    timestep = environment.reset()
    for _ in range(_STATES.value):
      observation = timestep.observation
      angle_to_goal = jaco.joint_angle_difference(observation[GOAL]['arm_pos'][0],
                                                  observation[OBSERVATION]['arm_pos'])
      ideal = np.clip(angle_to_goal / seconds, -maximum, maximum)
      batched = jax.tree.map(lambda x: jnp.asarray(x)[None], observation)
      gradient = np.asarray(dq_da(batched, zeros[None]))[0, :6]
      cosines.append(gradient @ ideal /
                     (np.linalg.norm(gradient) * np.linalg.norm(ideal) + 1e-12))
      timestep = environment.step(zeros)
      if timestep.last():
        break
  cosines = np.asarray(cosines)
  return {'mean_cosine': float(cosines.mean()), 'positive': float(np.mean(cosines > 0)),
          'states': cosines.size}


def main(argv):
  del argv
  config = dataclasses.replace(config_flags.config_from_flags('cpu_small'),
                               policy_warmup_steps=10**9, train_task_policy=False)
  domain = make_domain('jaco_stack')
  _, held_out = demo_sets.load(domain, _DEMO_DIR.value)
  builder = MetaMimicBuilder(config, domain)
  spec = specs.make_environment_spec(builder.make_demo_environment(held_out, 0))
  networks = builder.make_networks(spec).imitation
  settings = training.TrainSettings(
      domain='jaco_stack', workdir=_WORKDIR.value, demo_dir=_DEMO_DIR.value,
      max_env_steps=_ENV_STEPS.value, eval_every_env_steps=_ENV_STEPS.value,
      num_task_eval_episodes=0)
  training.run(settings, config)
  paths = checkpointing.checkpoint_paths(os.path.join(_WORKDIR.value, 'checkpoints'))
  state = checkpointing.read(paths[-1])['state']['learner']
  print(f'critic probe: action_repeat {config.action_repeat}, sigma {config.sigma}, '
        f'discount {config.discount}, n_step {config.n_step}, '
        f'goal_relative {config.goal_relative_features}, env steps {_ENV_STEPS.value}, '
        f'learner steps {int(state.steps)}')
  initial = networks.critic.init(jax.random.PRNGKey(0),
                                 *networks_lib.dummy_inputs(spec))
  for name, params in (('initialisation', initial),
                       ('trained', state.imitation.critic_params)):
    result = probe(builder, networks, params, held_out)
    print(f'  {name:>14}: cos(dQ/da, to goal) mean {result["mean_cosine"]:+.3f}, '
          f'positive in {result["positive"]:.0%} of {result["states"]} states')


if __name__ == '__main__':
  cli.run(main)
