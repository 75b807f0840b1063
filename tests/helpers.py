"""Shared test fixtures: tiny configs and point-mass demonstrations."""

import dataclasses
import functools
import os

from acme import specs
import jax
import numpy as np

from metamimic_jax import demonstrations
from metamimic_jax import demonstrators
from metamimic_jax import learner as learner_lib
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax import training
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import make_domain
from tests.core.synthetic import TINY_CONFIG


@functools.lru_cache(maxsize=None)
def point_mass_demos(num: int = 4, first_seed: int = 0):
  domain = make_domain('point_mass')
  return tuple(demonstrators.record_demonstration(domain, s)
               for s in range(first_seed, first_seed + num))


class PolicyParams:
  """A VariableSource serving freshly initialised policy parameters."""

  def __init__(self, networks, spec):
    dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
    self.state = learning.init_training_state(
        jax.random.PRNGKey(3), networks, dummy_observation, dummy_action, TINY_CONFIG)

  def get_variables(self, names):
    policies = {learner_lib.MetaMimicLearner.IMITATION_POLICY: self.state.imitation,
                learner_lib.MetaMimicLearner.TASK_POLICY: self.state.task}
    return [policies[name].policy_params for name in names]


def point_mass_setup(config: MetaMimicConfig = TINY_CONFIG, num_demos: int = 4):
  """(builder, demo environment, environment spec) on the point-mass domain."""
  builder = MetaMimicBuilder(config, make_domain('point_mass'))
  environment = builder.make_demo_environment(point_mass_demos(num_demos), seed=0)
  return builder, environment, specs.make_environment_spec(environment)


def tiny_point_mass_run(workdir, demo_frames: int = 12) -> None:
  """A handful of learner steps of experiments/train.py's loop in `workdir`, on point-mass
  demos cut to `demo_frames` (short demos keep rendering, ~0.2 s a frame, quick); its
  demos in `workdir`/demos: train.h5 (2) and held_out.h5 (3)."""
  demos = [dataclasses.replace(
      demo, observations={k: v[:demo_frames] for k, v in demo.observations.items()},
      task_rewards=demo.task_rewards[:demo_frames - 1]) for demo in point_mass_demos(4)]
  demo_dir = os.path.join(workdir, 'demos')
  os.makedirs(demo_dir)
  demonstrations.save(os.path.join(demo_dir, 'train.h5'), demos[:2], 'point_mass')
  demonstrations.save(os.path.join(demo_dir, 'held_out.h5'), demos[1:], 'point_mass')
  training.run(training.TrainSettings(
      workdir=str(workdir), demo_dir=demo_dir, max_env_steps=20, eval_every_env_steps=20,
      num_task_eval_episodes=1), TINY_CONFIG)


def item_transitions(layout, item) -> list:
  """A replay item's transitions, in order: one per environment of the adder that
  wrote it."""
  transitions = layout.unpack(item)
  return [jax.tree.map(lambda x, i=i: x[i], transitions)
          for i in range(len(transitions.action))]


def one_transition(layout, item):
  """The transition of a replay item written by one environment's adder."""
  transition, = item_transitions(layout, item)
  return transition


def flat_transition(transition) -> np.ndarray:
  """A transition's leaves, flat, as one float64 array."""
  return np.concatenate([np.ravel(x).astype(np.float64)
                         for x in jax.tree.leaves(transition)])
