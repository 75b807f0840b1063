"""Haiku networks: goal-conditioned imitation and unconditioned task actor-critics.

All networks are pure `init`/`apply` pairs over batched inputs. An observation is the
nested dict the environments emit: `{'observation': {...}, 'goal': {...}}`. Imitation
networks read both parts; task networks read only `observation`. Feature arrays are
flattened through a LayerNorm MLP torso; uint8 arrays are images, embedded by a residual
conv torso with LayerNorm (the paper's finding: deep residual nets need normalization).
"""

from typing import Callable, NamedTuple, Sequence

from acme import specs
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.keys import GOAL, GOAL_MINUS_OBSERVATION, OBSERVATION


class ActorCriticNetworks(NamedTuple):
  """A deterministic policy and a distributional critic over `atoms`."""
  policy: hk.Transformed  # apply(params, observation) -> action, in the spec's bounds.
  # The same policy before its tanh: apply(params, observation) -> [B, action size];
  # `squash` maps that to the action (policy = squash o policy_preactivation).
  policy_preactivation: hk.Transformed
  squash: Callable[[jnp.ndarray], jnp.ndarray]
  critic: hk.Transformed  # apply(params, observation, action) -> logits [..., atoms].
  atoms: jnp.ndarray


class MetaMimicNetworks(NamedTuple):
  imitation: ActorCriticNetworks  # pi(o_t, d_t+1) and Q(o_t, d_t+1, a_t).
  task: ActorCriticNetworks  # pi(o_t) and Q(o_t, a_t).


class LayerNormMLP(hk.Module):
  """Linear -> LayerNorm -> tanh, then an ELU MLP (Acme's D4PG torso)."""

  def __init__(self, layer_sizes: Sequence[int], name=None):
    super().__init__(name=name)
    self._layer_sizes = tuple(layer_sizes)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = hk.Linear(self._layer_sizes[0], w_init=hk.initializers.VarianceScaling(
        1.0, 'fan_avg', 'uniform'))(x)
    x = jnp.tanh(hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x))
    return hk.nets.MLP(self._layer_sizes[1:], activation=jax.nn.elu,
                       activate_final=True)(x)


class ResidualConvTorso(hk.Module):
  """IMPALA-style residual conv stack with LayerNorm before each convolution."""

  def __init__(self, channels: Sequence[int], output_size: int = 256, name=None):
    super().__init__(name=name)
    self._channels = tuple(channels)
    self._output_size = output_size

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    x = images
    for i, channels in enumerate(self._channels):
      x = hk.Conv2D(channels, 3, name=f'stem_{i}')(x)
      x = hk.max_pool(x, window_shape=3, strides=2, padding='SAME')
      for j in range(2):
        residual = hk.LayerNorm(axis=(-3, -2, -1), create_scale=True,
                                create_offset=True, name=f'norm_{i}_{j}')(x)
        residual = hk.Conv2D(channels, 3, name=f'conv_{i}_{j}')(jax.nn.relu(residual))
        x = x + residual
    x = hk.Flatten()(jax.nn.relu(x))
    return jax.nn.relu(hk.Linear(self._output_size)(x))


def embed(inputs, conv_channels: Sequence[int]) -> jnp.ndarray:
  """Concatenates flattened features and conv embeddings of images, batched [B, ...].

  Images are uint8 leaves; a goal's stacked image frames [B, H, h, w, c] are merged into
  channels [B, h, w, H * c].
  """
  features, images = [], []
  for leaf in jax.tree.leaves(inputs):
    if leaf.dtype == jnp.uint8:
      leaf = leaf.astype(jnp.float32) / 255.0
      if leaf.ndim == 5:
        leaf = jnp.moveaxis(leaf, 1, -2).reshape(leaf.shape[:1] + leaf.shape[2:4] + (-1,))
      images.append(leaf)
    else:
      features.append(jnp.reshape(leaf, (leaf.shape[0], -1)).astype(jnp.float32))
  if images:
    features.append(ResidualConvTorso(conv_channels)(jnp.concatenate(images, axis=-1)))
  return jnp.concatenate(features, axis=-1)


def goal_minus_observation(observation):
  """Each goal frame minus the current observation, for feature keys in both [B, H, ...]."""
  current, goal = observation[OBSERVATION], observation[GOAL]
  return {key: frames - jnp.expand_dims(current[key], 1) for key, frames in goal.items()
          if key in current and frames.dtype != jnp.uint8}


def make_actor_critic(action_spec: specs.BoundedArray, config: MetaMimicConfig,
                      goal_conditioned: bool) -> ActorCriticNetworks:
  """A D4PG actor-critic; `goal_conditioned` networks also read the goal."""
  action_size = int(np.prod(action_spec.shape))
  minimum = jnp.asarray(action_spec.minimum, jnp.float32)
  maximum = jnp.asarray(action_spec.maximum, jnp.float32)

  def select(observation):
    if not goal_conditioned:
      return {OBSERVATION: observation[OBSERVATION]}
    inputs = {OBSERVATION: observation[OBSERVATION], GOAL: observation[GOAL]}
    if config.goal_relative_features:
      inputs[GOAL_MINUS_OBSERVATION] = goal_minus_observation(observation)
    return inputs

  def preactivation_fn(observation):
    x = LayerNormMLP(config.policy_layer_sizes)(
        embed(select(observation), config.conv_channels))
    return hk.Linear(action_size, w_init=hk.initializers.VarianceScaling(1e-4))(x)

  def squash(preactivation):
    action = minimum + (jnp.tanh(preactivation) + 1.0) * 0.5 * (maximum - minimum)
    return action.reshape(action.shape[:1] + tuple(action_spec.shape))

  def critic_fn(observation, action):
    x = embed(select(observation), config.conv_channels)
    # Actions rescaled to [-1, 1]: every action dimension weighs alike in the critic's
    # input and in dQ/da, whatever its range (Jaco: fingers 5, arm joints 0.6-0.8).
    action = jnp.reshape(action, (action.shape[0], -1))
    action = 2.0 * (action - minimum) / (maximum - minimum) - 1.0
    x = jnp.concatenate([x, action], axis=-1)
    x = LayerNormMLP(config.critic_layer_sizes)(x)
    return hk.Linear(config.num_atoms)(x)

  return ActorCriticNetworks(
      policy=hk.without_apply_rng(hk.transform(lambda o: squash(preactivation_fn(o)))),
      policy_preactivation=hk.without_apply_rng(hk.transform(preactivation_fn)),
      squash=squash,
      critic=hk.without_apply_rng(hk.transform(critic_fn)),
      atoms=jnp.linspace(*config.value_support, config.num_atoms))


def make_networks(environment_spec: specs.EnvironmentSpec,
                  config: MetaMimicConfig) -> MetaMimicNetworks:
  return MetaMimicNetworks(
      imitation=make_actor_critic(environment_spec.actions, config, True),
      task=make_actor_critic(environment_spec.actions, config, False))


def dummy_inputs(environment_spec: specs.EnvironmentSpec):
  """A batch of one zero observation and action, for `init`."""
  zeros: Callable = lambda s: np.zeros((1,) + tuple(s.shape), s.dtype)
  return (jax.tree.map(zeros, environment_spec.observations),
          zeros(environment_spec.actions))
