"""Haiku networks: goal-conditioned imitation and unconditioned task actor-critics.

All networks are pure `init`/`apply` pairs over batched inputs. An observation is the
nested dict the environments emit: `{'observation': {...}, 'goal': {...}}`. Imitation
networks read both parts (a privileged critic only their features); task networks
read only `observation`. Feature arrays are flattened through an MLP torso; uint8
arrays are images, embedded by a residual conv torso. The policy and the critic each
have their own torso, chosen by the config: Acme's D4PG LayerNorm MLP, or residual
torsos from small to large (the paper's finding: deep residual nets with normalization
imitate best). Normalization is none, layer or group. On CPU some gradients take faster
forms with the same values: the conv torsos' max-pools and wide convs' kernels, the wide
residual layers' inputs.

`python -m metamimic_jax.networks` prints each torso's parameter count.
"""

from typing import Callable, NamedTuple, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax.config import (MLP_TORSO, NORM_GROUPS, TORSO_SIZES, TORSOS,
                                  MetaMimicConfig, TorsoSize)
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


def normalize(x: jnp.ndarray, normalization: str, name=None) -> jnp.ndarray:
  """Normalizes each example [B, ...]: 'layer' over all its axes, 'group' over
  NORM_GROUPS groups of its channels (the last axis); 'none' returns x.

  Statistics are computed in float32 whatever the compute dtype.
  """
  if normalization == 'none':
    return x
  if normalization == 'layer':
    module = hk.LayerNorm(axis=tuple(range(1, x.ndim)), create_scale=True,
                          create_offset=True, name=name)
  else:
    module = hk.GroupNorm(NORM_GROUPS, name=name)
  return module(x.astype(jnp.float32)).astype(x.dtype)


class LayerNormMLP(hk.Module):
  """Linear -> LayerNorm -> tanh, then an ELU MLP (Acme's D4PG torso).

  `normalization` replaces the LayerNorm ('none' drops it, 'group' uses GroupNorm).
  """

  def __init__(self, layer_sizes: Sequence[int], normalization: str = 'layer',
               name=None):
    super().__init__(name=name)
    self._layer_sizes = tuple(layer_sizes)
    self._normalization = normalization

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = hk.Linear(self._layer_sizes[0], w_init=hk.initializers.VarianceScaling(
        1.0, 'fan_avg', 'uniform'))(x)
    x = jnp.tanh(normalize(x, self._normalization))
    return hk.nets.MLP(self._layer_sizes[1:], activation=jax.nn.elu,
                       activate_final=True)(x)


# XLA's gradient of a max-pool is a select-and-scatter, which XLA:CPU expands into a
# scatter loop: the medium conv torso's three pools cost 265 ms of its 1546 ms gradient
# at batch 256. `max_pool` computes the same gradient from the window's nine shifted
# views: 64 ms (WORKSPACE_NOTES.md, "The max-pool's and the conv kernel's gradients").
POOL_WINDOW, POOL_STRIDE = 3, 2


def _pool_geometry(size: int):
  """(padding below, padding above, output size) of one spatial axis, SAME padding."""
  (low, high), = jax.lax.padtype_to_pads((size,), (POOL_WINDOW,), (POOL_STRIDE,), 'SAME')
  return low, high, -(-size // POOL_STRIDE)


def _reduce_window_max(x: jnp.ndarray) -> jnp.ndarray:
  return hk.max_pool(x, window_shape=POOL_WINDOW, strides=POOL_STRIDE, padding='SAME')


def _computed_once(x: jnp.ndarray) -> jnp.ndarray:
  """x, as a reduction XLA:CPU does not fuse into its consumers: the pool's gradient
  reads dy nine times, and fused, its producer (the next layers' gradient) would be
  recomputed as often."""
  return jnp.sum(jnp.stack([x, jnp.zeros_like(x)]), axis=0)


def _max_pool_gradient_on_cpu(x, y, dy):
  """The gradient reduce_window's select-and-scatter gives: each output's gradient goes
  to its window's first maximum in row-major order, found by comparing y with the
  window's shifted views in that order; each view's share is strided back into place
  by interior padding (negative edges crop SAME's padding)."""
  dy = _computed_once(dy)
  batch, height, width, channels = x.shape
  (low_h, high_h, out_h), (low_w, high_w, out_w) = map(_pool_geometry, (height, width))
  x_padded = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype),
                         ((0, 0, 0), (low_h, high_h, 0), (low_w, high_w, 0), (0, 0, 0)))
  span_h, span_w = POOL_STRIDE * (out_h - 1) + 1, POOL_STRIDE * (out_w - 1) + 1
  zero = jnp.zeros((), dy.dtype)
  taken = jnp.zeros(y.shape, bool)
  dx = jnp.zeros(x.shape, dy.dtype)
  for i in range(POOL_WINDOW):
    for j in range(POOL_WINDOW):
      view = jax.lax.slice(x_padded, (0, i, j, 0),
                           (batch, i + span_h, j + span_w, channels),
                           (1, POOL_STRIDE, POOL_STRIDE, 1))
      first = (view == y) & ~taken
      taken = taken | first
      share = jnp.where(first, dy, zero)
      dx = dx + jax.lax.pad(share, zero, (
          (0, 0, 0),
          (i - low_h, height - (i - low_h) - span_h, POOL_STRIDE - 1),
          (j - low_w, width - (j - low_w) - span_w, POOL_STRIDE - 1),
          (0, 0, 0)))
  return dx


@jax.custom_vjp
def max_pool(x: jnp.ndarray) -> jnp.ndarray:
  """hk.max_pool over [B, H, W, C], window 3, stride 2, SAME: the same values and
  gradient; on CPU the gradient avoids XLA's select-and-scatter."""
  return _reduce_window_max(x)


def _max_pool_forward(x):
  y = _reduce_window_max(x)
  return y, (x, y)


def _max_pool_backward(residuals, dy):
  x, y = residuals
  xla_gradient = lambda x, y, dy: jax.vjp(_reduce_window_max, x)[1](dy)[0]
  return (jax.lax.platform_dependent(x, y, dy, cpu=_max_pool_gradient_on_cpu,
                                     default=xla_gradient),)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)


# XLA:CPU computes a 3x3 conv's kernel gradient as one convolution contracting over the
# batch and the image, at 0.4-0.7 of the forward's rate for the conv torsos' shapes.
# Summed over chunks of KERNEL_GRADIENT_CHUNK examples it runs 1.2-1.5x faster alone;
# the medium and large torsos' gradients take 0.88-0.92 of the time, the small one's no
# less (so only convs of KERNEL_GRADIENT_MIN_CHANNELS outputs or more are chunked, and
# the others compile as before; WORKSPACE_NOTES.md, "The max-pool's and the conv
# kernel's gradients").
KERNEL_GRADIENT_CHUNK = 32
KERNEL_GRADIENT_MIN_CHANNELS = 64
CONV_KERNEL_SIZE = 3


def _conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _kernel_gradient(x, w, dy):
  return jax.vjp(lambda w: _conv(x, w), w)[1](dy)[0]


def _kernel_gradient_on_cpu(x, w, dy):
  """The kernel gradient summed over chunks of the batch in float32, where that pays."""
  chunks = x.shape[0] // KERNEL_GRADIENT_CHUNK
  if (chunks < 2 or x.shape[0] % KERNEL_GRADIENT_CHUNK
      or w.shape[-1] < KERNEL_GRADIENT_MIN_CHANNELS):
    return _kernel_gradient(x, w, dy)
  parts = [_kernel_gradient(x_chunk, w, dy_chunk).astype(jnp.float32)
           for x_chunk, dy_chunk in zip(jnp.split(x, chunks), jnp.split(dy, chunks))]
  return sum(parts).astype(w.dtype)


@jax.custom_vjp
def _chunked_conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  return _conv(x, w)


def _chunked_conv_forward(x, w):
  return _conv(x, w), (x, w)


def _chunked_conv_backward(residuals, dy):
  x, w = residuals
  dx = jax.vjp(lambda x: _conv(x, w), x)[1](dy)[0]
  dw = jax.lax.platform_dependent(x, w, dy, cpu=_kernel_gradient_on_cpu,
                                  default=_kernel_gradient)
  return dx, dw


_chunked_conv.defvjp(_chunked_conv_forward, _chunked_conv_backward)


class Conv2D(hk.Module):
  """hk.Conv2D(output_channels, 3) over [B, H, W, C]: the same parameters and values;
  on CPU, from KERNEL_GRADIENT_MIN_CHANNELS outputs, its kernel gradient is summed over
  chunks of the batch."""

  def __init__(self, output_channels: int, name=None):
    super().__init__(name=name)
    self._output_channels = output_channels

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    w_shape = (CONV_KERNEL_SIZE, CONV_KERNEL_SIZE, x.shape[-1], self._output_channels)
    w_init = hk.initializers.TruncatedNormal(1. / np.sqrt(np.prod(w_shape[:-1])))
    w = hk.get_parameter('w', w_shape, x.dtype, init=w_init)
    b = hk.get_parameter('b', (self._output_channels,), x.dtype, init=jnp.zeros)
    return _chunked_conv(x, w) + b


class ResidualConvTorso(hk.Module):
  """The small conv torso beside LayerNormMLP: per stage a conv, a max-pool and two
  residual units of one normalized convolution each."""

  def __init__(self, channels: Sequence[int], normalization: str = 'layer',
               output_size: int = 256, name=None):
    super().__init__(name=name)
    self._channels = tuple(channels)
    self._normalization = normalization
    self._output_size = output_size

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    x = images
    for i, channels in enumerate(self._channels):
      x = Conv2D(channels, name=f'stem_{i}')(x)
      x = max_pool(x)
      for j in range(2):
        residual = normalize(x, self._normalization, name=f'norm_{i}_{j}')
        residual = Conv2D(channels, name=f'conv_{i}_{j}')(jax.nn.relu(residual))
        x = x + residual
    x = hk.Flatten()(jax.nn.relu(x))
    return jax.nn.relu(hk.Linear(self._output_size)(x))


# XLA:CPU in jaxlib 0.6 (the pinned stack's) runs a matmul whose right operand is
# contracted over its minor axis, dy @ w.T in a Linear layer's backward pass, at under
# half the rate of a row-major one at [256, width] x [width, width]; jaxlib 0.12's has no
# such gap (WORKSPACE_NOTES.md, "Two slow paths of XLA:CPU in the learner step").
SLOW_TRANSPOSED_MATMUL_ON_CPU = jax.__version_info__[:2] <= (0, 6)
# The rewrite below adds two [B, width] transposes to save on a [B, width] x [width,
# width] matmul, so it pays for wide layers and batches up to half their width only
# (the input gradient alone: 1.4-2.8x for B <= width / 2, 0.68x at B = width = 1024;
# the learner step at B = 256: 0.95x with the small torso's 256, 1.1-1.2x medium's
# 1024, 1.4x large's 2048).
ROW_MAJOR_GRADIENT_MIN_WIDTH = 1024


def _row_major_gradient_pays(batch: int, width: int) -> bool:
  return (SLOW_TRANSPOSED_MATMUL_ON_CPU and width >= ROW_MAJOR_GRADIENT_MIN_WIDTH
          and 2 * batch <= width)


def _input_gradient_on_cpu(dy: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """dy @ w.T as (w @ dy.T).T: row-major matmuls and two [B, width] transposes, which
  the barriers keep XLA from folding back into the slow form."""
  dy_t = jax.lax.optimization_barrier(dy.T)
  dx_t = jax.lax.dot_general(w, dy_t, (((1,), (0,)), ((), ())))
  return jax.lax.optimization_barrier(dx_t).T


@jax.custom_vjp
def _block_matmul(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  return jnp.dot(x, w)


def _block_matmul_forward(x, w):
  return jnp.dot(x, w), (x, w)


def _block_matmul_backward(residuals, dy):
  x, w = residuals
  dx = jax.lax.platform_dependent(dy, w, cpu=_input_gradient_on_cpu,
                                  default=lambda dy, w: jnp.dot(dy, w.T))
  return dx, jnp.dot(x.T, dy)


_block_matmul.defvjp(_block_matmul_forward, _block_matmul_backward)


class BlockLinear(hk.Linear):
  """hk.Linear for a residual block's [B, width] -> [B, width] layer: the same
  parameters and values; on the pinned XLA:CPU, for widths from
  ROW_MAJOR_GRADIENT_MIN_WIDTH and batches up to half the width, its input gradient
  avoids the slow transposed matmul."""

  def __call__(self, inputs: jnp.ndarray, *, precision=None) -> jnp.ndarray:
    input_size = inputs.shape[-1]
    if (inputs.ndim != 2 or precision is not None
        or not _row_major_gradient_pays(inputs.shape[0], input_size)):
      return super().__call__(inputs, precision=precision)
    w_init = self.w_init or hk.initializers.TruncatedNormal(1. / np.sqrt(input_size))
    w = hk.get_parameter('w', [input_size, self.output_size], inputs.dtype, init=w_init)
    outputs = _block_matmul(inputs, w)
    if self.with_bias:
      outputs += hk.get_parameter('b', [self.output_size], inputs.dtype, init=self.b_init)
    return outputs


class ResidualMLP(hk.Module):
  """Linear to `width`, residual blocks of two pre-activation (normalize, ReLU, Linear)
  layers, then a final normalization and ReLU."""

  def __init__(self, width: int, num_blocks: int, normalization: str, name=None):
    super().__init__(name=name)
    self._width = width
    self._num_blocks = num_blocks
    self._normalization = normalization

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = hk.Linear(self._width, name='input')(x)
    for i in range(self._num_blocks):
      residual = x
      for j in range(2):
        residual = normalize(residual, self._normalization, name=f'norm_{i}_{j}')
        residual = BlockLinear(self._width, name=f'linear_{i}_{j}')(jax.nn.relu(residual))
      x = x + residual
    return jax.nn.relu(normalize(x, self._normalization, name='output_norm'))


class ImpalaConvTorso(hk.Module):
  """IMPALA's residual conv net: per stage a conv, a max-pool and residual blocks of
  two pre-activation (normalize, ReLU, conv) layers; then ReLU and one Linear layer."""

  def __init__(self, channels: Sequence[int], num_blocks: int, output_size: int,
               normalization: str, name=None):
    super().__init__(name=name)
    self._channels = tuple(channels)
    self._num_blocks = num_blocks
    self._output_size = output_size
    self._normalization = normalization

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    x = images
    for i, channels in enumerate(self._channels):
      x = Conv2D(channels, name=f'stem_{i}')(x)
      x = max_pool(x)
      for j in range(self._num_blocks):
        residual = x
        for k in range(2):
          residual = normalize(residual, self._normalization, name=f'norm_{i}_{j}_{k}')
          residual = Conv2D(channels, name=f'conv_{i}_{j}_{k}')(
              jax.nn.relu(residual))
        x = x + residual
    x = hk.Flatten()(jax.nn.relu(x))
    return jax.nn.relu(hk.Linear(self._output_size)(x))


class Torso(NamedTuple):
  """Factories (called inside a Haiku transform) of one network's two torsos."""
  features: Callable[[], hk.Module]  # Maps [B, n] to [B, width].
  pixels: Callable[[], hk.Module]  # Maps images [B, h, w, c] to [B, embedding].


def make_torso(torso: str, layer_sizes: Sequence[int], config: MetaMimicConfig
               ) -> Torso:
  """MLP_TORSO (LayerNormMLP of `layer_sizes`, ResidualConvTorso of the config's
  `conv_channels`) or the residual torsos of TORSO_SIZES[torso]."""
  normalization = config.normalization
  if torso == MLP_TORSO:
    return Torso(lambda: LayerNormMLP(layer_sizes, normalization),
                 lambda: ResidualConvTorso(config.conv_channels, normalization))
  size: TorsoSize = TORSO_SIZES[torso]
  return Torso(
      lambda: ResidualMLP(size.width, size.blocks, normalization),
      lambda: ImpalaConvTorso(size.conv_channels, size.conv_blocks, size.embedding_size,
                              normalization))


def embed(inputs, pixel_torso: Callable[[], hk.Module], dtype=jnp.float32
          ) -> jnp.ndarray:
  """Concatenates flattened features and conv embeddings of images, batched [B, ...],
  in `dtype`.

  Images are uint8 leaves, scaled to [0, 1]; a goal's stacked image frames
  [B, H, h, w, c] are merged into channels [B, h, w, H * c].
  """
  features, images = [], []
  for leaf in jax.tree.leaves(inputs):
    if leaf.dtype == jnp.uint8:
      leaf = (jnp.asarray(leaf, jnp.float32) / 255.0).astype(dtype)
      if leaf.ndim == 5:
        leaf = jnp.moveaxis(leaf, 1, -2).reshape(leaf.shape[:1] + leaf.shape[2:4] + (-1,))
      images.append(leaf)
    else:
      features.append(jnp.reshape(leaf, (leaf.shape[0], -1)).astype(dtype))
  if images:
    features.append(pixel_torso()(jnp.concatenate(images, axis=-1)))
  return jnp.concatenate(features, axis=-1)


def goal_minus_observation(observation):
  """Each goal frame minus the current observation, for feature keys in both [B, H, ...]."""
  current, goal = observation[OBSERVATION], observation[GOAL]
  return {key: frames - jnp.expand_dims(current[key], 1) for key, frames in goal.items()
          if key in current and frames.dtype != jnp.uint8}


def _cast_parameters(dtype):
  """A Haiku custom getter handing the network its (float32) parameters in `dtype`."""
  def getter(next_getter, value, context):
    del context
    return next_getter(value).astype(dtype)
  return getter


def _create_in_float32(next_creator, shape, dtype, init, context):
  """A Haiku custom creator: parameters are float32 whatever dtype a layer asks for
  (Haiku's layers ask for their input's)."""
  del dtype, context
  return next_creator(shape, jnp.float32, init)


def make_actor_critic(action_spec, config: MetaMimicConfig, goal_conditioned: bool,
                      policy_goal_keys: Optional[Sequence[str]] = None
                      ) -> ActorCriticNetworks:
  """A D4PG actor-critic; `goal_conditioned` networks also read the goal.

  `action_spec` is any bounded array spec (`shape`, `minimum`, `maximum`), such as
  dm_env's `specs.BoundedArray`. The policy reads the goal's `policy_goal_keys` (None:
  all); the critic reads the whole goal, and with `config.privileged_critic` only the
  feature leaves of its inputs. With `config.compute_dtype` bfloat16 the torsos and
  heads compute in bfloat16 from float32 parameters; outputs are float32.
  """
  action_size = int(np.prod(action_spec.shape))
  minimum = jnp.asarray(action_spec.minimum, jnp.float32)
  maximum = jnp.asarray(action_spec.maximum, jnp.float32)
  # By object, not by name: TensorFlow (imported beside us) registers its own numpy
  # 'bfloat16', which JAX does not accept.
  dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.compute_dtype]
  policy_torso = make_torso(config.policy_torso, config.policy_layer_sizes, config)
  critic_torso = make_torso(config.critic_torso, config.critic_layer_sizes, config)

  def select(observation, goal_keys=None):
    if not goal_conditioned:
      return {OBSERVATION: observation[OBSERVATION]}
    goal = {key: frames for key, frames in observation[GOAL].items()
            if goal_keys is None or key in goal_keys}
    inputs = {OBSERVATION: observation[OBSERVATION], GOAL: goal}
    if config.goal_relative_features:
      inputs[GOAL_MINUS_OBSERVATION] = goal_minus_observation(inputs)
    return inputs

  def critic_inputs(observation):
    inputs = select(observation)
    if config.privileged_critic:
      inputs = jax.tree.map(lambda x: None if x.dtype == jnp.uint8 else x, inputs)
    return inputs

  def in_compute_dtype(fn):
    if dtype == jnp.float32:
      return fn
    def wrapped(*args):
      with hk.custom_creator(_create_in_float32), \
           hk.custom_getter(_cast_parameters(dtype)):
        return fn(*args).astype(jnp.float32)
    return wrapped

  @in_compute_dtype
  def preactivation_fn(observation):
    x = policy_torso.features()(embed(select(observation, policy_goal_keys),
                                      policy_torso.pixels, dtype))
    return hk.Linear(action_size, w_init=hk.initializers.VarianceScaling(1e-4))(x)

  def squash(preactivation):
    action = minimum + (jnp.tanh(preactivation) + 1.0) * 0.5 * (maximum - minimum)
    return action.reshape(action.shape[:1] + tuple(action_spec.shape))

  @in_compute_dtype
  def critic_fn(observation, action):
    x = embed(critic_inputs(observation), critic_torso.pixels, dtype)
    # Actions rescaled to [-1, 1]: every action dimension weighs alike in the critic's
    # input and in dQ/da, whatever its range (Jaco: fingers 5, arm joints 0.6-0.8).
    action = jnp.reshape(action, (action.shape[0], -1))
    action = 2.0 * (action - minimum) / (maximum - minimum) - 1.0
    x = jnp.concatenate([x, action.astype(dtype)], axis=-1)
    x = critic_torso.features()(x)
    return hk.Linear(config.num_atoms)(x)

  return ActorCriticNetworks(
      policy=hk.without_apply_rng(hk.transform(lambda o: squash(preactivation_fn(o)))),
      policy_preactivation=hk.without_apply_rng(hk.transform(preactivation_fn)),
      squash=squash,
      critic=hk.without_apply_rng(hk.transform(critic_fn)),
      atoms=jnp.linspace(*config.value_support, config.num_atoms))


def make_networks(environment_spec, config: MetaMimicConfig,
                  policy_goal_keys: Optional[Sequence[str]] = None) -> MetaMimicNetworks:
  """Both actor-critics for an environment spec (`observations`, `actions`: Acme's
  `specs.EnvironmentSpec` or anything with those fields); the imitation policy reads
  the goal's `policy_goal_keys` (None: all)."""
  return MetaMimicNetworks(
      imitation=make_actor_critic(environment_spec.actions, config, True,
                                  policy_goal_keys),
      task=make_actor_critic(environment_spec.actions, config, False))


def dummy_inputs(environment_spec):
  """A batch of one zero observation and action, for `init`."""
  zeros: Callable = lambda s: np.zeros((1,) + tuple(s.shape), s.dtype)
  return (jax.tree.map(zeros, environment_spec.observations),
          zeros(environment_spec.actions))
