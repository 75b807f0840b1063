"""Networks: shapes, goal conditioning, pixels, torsos, normalization, bfloat16."""

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metamimic_jax import config as config_lib
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from tests.core import synthetic

TINY_CONFIG = synthetic.TINY_CONFIG


def _observation(spec, batch, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: rng.normal(size=(batch,) + s.shape).astype(s.dtype), spec.observations)


def test_shapes_bounds_and_goal_conditioning():
  spec = synthetic.point_mass_spec()
  networks = networks_lib.make_networks(spec, TINY_CONFIG)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  observation = _observation(spec, 5)
  other_goal = dict(observation, goal=_observation(spec, 5, seed=1)['goal'])
  action = np.zeros((5,) + spec.actions.shape, np.float32)
  for agent, conditioned in ((networks.imitation, True), (networks.task, False)):
    policy_params = agent.policy.init(jax.random.PRNGKey(0), dummy_observation)
    critic_params = agent.critic.init(jax.random.PRNGKey(1), dummy_observation,
                                      dummy_action)
    a = agent.policy.apply(policy_params, observation)
    assert a.shape == (5,) + spec.actions.shape
    assert np.all(a >= spec.actions.minimum) and np.all(a <= spec.actions.maximum)
    logits = agent.critic.apply(critic_params, observation, action)
    assert logits.shape == (5, TINY_CONFIG.num_atoms)
    moved = agent.policy.apply(policy_params, other_goal)
    assert (not np.allclose(a, moved)) == conditioned
  assert agent.atoms.shape == (TINY_CONFIG.num_atoms,)


def test_pixels_go_through_the_residual_conv_torso():
  spec = synthetic.pixel_spec()
  observation_spec = spec.observations
  networks = networks_lib.make_networks(spec, TINY_CONFIG)
  dummy_observation, _ = networks_lib.dummy_inputs(spec)
  params = networks.imitation.policy.init(jax.random.PRNGKey(0), dummy_observation)
  conv_weights = {name for name in params if 'residual_conv_torso' in name and
                  ('/conv_' in name or '/stem_' in name)}
  assert conv_weights
  assert any('/norm_' in name for name in params)  # Normalised residual blocks.
  rng = np.random.default_rng(0)
  observation = jax.tree.map(
      lambda s: rng.integers(0, 255, (2,) + s.shape).astype(s.dtype), observation_spec)
  policy = networks.imitation.policy.apply
  action = policy(params, observation)
  assert action.shape == (2, 3) and np.all(np.abs(action) <= 2.0)

  def with_pixels(part, pixels):
    return {**observation, part: {**observation[part], 'pixels': pixels}}

  # The action reads the observation's pixels and the goal's pixels; features alone
  # (unchanged here) would give the same action.
  for part in ('observation', 'goal'):
    pixels = observation[part]['pixels']
    moved = policy(params, with_pixels(part, 255 - pixels))
    assert np.all(np.abs(moved - action).max(axis=-1) > 1e-6), part
  # The task policy ignores the goal, pixels included.
  task_params = networks.task.policy.init(jax.random.PRNGKey(0), dummy_observation)
  np.testing.assert_array_equal(
      networks.task.policy.apply(task_params, observation),
      networks.task.policy.apply(task_params, with_pixels('goal', 255 - observation[
          'goal']['pixels'])))
  # Gradients reach every conv weight, through the policy and through the critic.
  grads = jax.grad(lambda p: policy(p, observation).sum())(params)
  critic_params = networks.imitation.critic.init(jax.random.PRNGKey(1), dummy_observation,
                                                 np.zeros((1, 3), np.float32))
  critic_grads = jax.grad(lambda p: networks.imitation.critic.apply(
      p, observation, action).sum())(critic_params)
  for name in conv_weights:
    assert np.abs(grads[name]['w']).max() > 0, name
    assert np.abs(critic_grads[name]['w']).max() > 0, name


def test_a_privileged_critic_reads_features_while_the_policy_reads_its_goal_keys():
  spec = synthetic.pixel_spec()
  config = dataclasses.replace(TINY_CONFIG, privileged_critic=True)
  networks = networks_lib.make_networks(spec, config, policy_goal_keys=('pixels',))
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  policy_params = networks.imitation.policy.init(jax.random.PRNGKey(0), dummy_observation)
  critic_params = networks.imitation.critic.init(jax.random.PRNGKey(1), dummy_observation,
                                                 dummy_action)
  assert any('conv' in name for name in policy_params)
  assert not any('conv' in name for name in critic_params)  # No image torso at all.
  observation = synthetic.random_observation(spec, 2, np.random.default_rng(0))
  action = np.zeros((2, 3), np.float32)
  policy = lambda o: networks.imitation.policy.apply(policy_params, o)
  critic = lambda o: networks.imitation.critic.apply(critic_params, o, action)

  def changed(part, key):
    return {**observation, part: {**observation[part],
                                  key: 255 - observation[part][key] if key == 'pixels'
                                  else observation[part][key] + 1.0}}

  # The policy reads the goal's pixels, not the goal's features; its own observation
  # (features and frame) as before.
  for part, key, reads in (('goal', 'pixels', True), ('goal', 'joints', False),
                           ('observation', 'pixels', True),
                           ('observation', 'joints', True)):
    moved = np.abs(policy(changed(part, key)) - policy(observation)).max(axis=-1)
    assert np.all(moved > 1e-6) == reads and np.all(moved == 0) != reads, (part, key)
  # The critic reads every feature, the goal's included, and no image.
  for part, key, reads in (('goal', 'pixels', False), ('goal', 'joints', True),
                           ('observation', 'pixels', False),
                           ('observation', 'joints', True)):
    moved = np.abs(critic(changed(part, key)) - critic(observation)).max(axis=-1)
    assert np.all(moved > 1e-6) == reads and np.all(moved == 0) != reads, (part, key)
  # It trains: a learner step on the pair runs and moves both networks.
  state, new_state, metrics = _tiny_step(config, spec, policy_goal_keys=('pixels',))
  for name in ('policy_params', 'critic_params'):
    before, after = (getattr(s.imitation, name) for s in (state, new_state))
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(before),
                                               jax.tree.leaves(after))), name
  assert all(np.isfinite(v) for v in jax.tree.leaves(metrics))


def _count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def _tiny_step(config, spec, policy_goal_keys=None):
  networks = networks_lib.make_networks(spec, config, policy_goal_keys)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  state = learning.init_training_state(jax.random.PRNGKey(0), networks,
                                       dummy_observation, dummy_action, config)
  new_state, metrics = jax.jit(learning.make_sgd_step(networks, config))(
      state, synthetic.random_batch(spec, 2))
  return state, new_state, metrics


@pytest.mark.parametrize('torso', [
    *(t for t in config_lib.TORSOS if t != 'large'),
    pytest.param('large', marks=pytest.mark.slow)])
@pytest.mark.parametrize('pixels', [False, True])
def test_every_torso_builds_and_takes_a_learner_step(torso, pixels):
  config = dataclasses.replace(TINY_CONFIG, policy_torso=torso, critic_torso=torso,
                               train_task_policy=False)
  spec = synthetic.pixel_spec(size=8) if pixels else synthetic.point_mass_spec()
  state, new_state, metrics = _tiny_step(config, spec)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                       state.imitation.critic_params, new_state.imitation.critic_params)
  assert max(jax.tree.leaves(moved)) > 0
  if torso != config_lib.MLP_TORSO:
    size = config_lib.TORSO_SIZES[torso]
    blocks = {name.split('/')[-1] for name in state.imitation.policy_params
              if name.startswith('residual_mlp/linear_')}
    assert len(blocks) == 2 * size.blocks, blocks
    if pixels:
      convs = [n for n in state.imitation.policy_params if 'impala_conv_torso/conv_' in n]
      assert len(convs) == 2 * size.conv_blocks * len(size.conv_channels)


def test_presets_grow_from_small_to_tens_of_millions_of_parameters():
  spec = synthetic.pixel_spec(size=48, horizon=1)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  counts = {}
  for torso in config_lib.TORSO_SIZES:
    config = dataclasses.replace(TINY_CONFIG, policy_torso=torso, critic_torso=torso)
    critic = networks_lib.make_networks(spec, config).imitation.critic
    counts[torso] = _count(jax.eval_shape(critic.init, jax.random.PRNGKey(0),
                                          dummy_observation, dummy_action))
  assert counts['small'] < counts['medium'] < counts['large']
  assert 10_000_000 <= counts['large'] < 100_000_000, counts


def _normalized(normalization, x):
  """normalize(x) at initial parameters (scale 1, offset 0), and those parameters."""
  transformed = hk.without_apply_rng(hk.transform(
      lambda x: networks_lib.normalize(x, normalization)))
  params = transformed.init(jax.random.PRNGKey(0), x)
  return params, transformed.apply(params, x)


@pytest.mark.parametrize('shape', [(4, 32), (4, 5, 6, 16)])
def test_normalization_variants_normalize(shape):
  rng = np.random.default_rng(0)
  # Every example and channel gets its own offset and scale, far from (0, 1).
  x = (rng.normal(size=shape) * rng.uniform(1, 9, shape[-1])
       + rng.uniform(-50, 50, shape[-1])).astype(np.float32)
  x[1] *= 7.0
  for normalization in config_lib.NORMALIZATIONS:
    params, y = _normalized(normalization, x)
    y = np.asarray(y, np.float64)
    if normalization == 'none':
      np.testing.assert_array_equal(y, x)
      assert not params
      continue
    if normalization == 'layer':  # Over all of an example's features.
      groups = y.reshape(shape[0], 1, -1)
    else:  # Over each group of shape[-1] / NORM_GROUPS channels (and all positions).
      size = shape[-1] // config_lib.NORM_GROUPS
      groups = np.moveaxis(y.reshape(shape[0], -1, config_lib.NORM_GROUPS, size), 2, 1)
      groups = groups.reshape(shape[0], config_lib.NORM_GROUPS, -1)
    np.testing.assert_allclose(groups.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(groups.std(-1), 1.0, rtol=1e-2)


@pytest.mark.parametrize('torso', ['mlp', 'small'])
def test_bfloat16_computes_in_bfloat16_from_float32_parameters(torso):
  base = dataclasses.replace(TINY_CONFIG, policy_torso=torso, critic_torso=torso)
  spec = synthetic.pixel_spec(size=8)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  rng = np.random.default_rng(0)
  observation = synthetic.random_observation(spec, 4, rng)
  action = rng.uniform(-2, 2, (4, 3)).astype(np.float32)
  outputs, matmul_dtypes = {}, {}
  for dtype in config_lib.COMPUTE_DTYPES:
    critic = networks_lib.make_networks(
        spec, dataclasses.replace(base, compute_dtype=dtype)).imitation.critic
    params = critic.init(jax.random.PRNGKey(1), dummy_observation, dummy_action)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype('float32')}
    outputs[dtype] = critic.apply(params, observation, action)
    jaxpr = jax.make_jaxpr(critic.apply)(params, observation, action)
    matmul_dtypes[dtype] = {
        v.aval.dtype.name for e in jaxpr.eqns
        if e.primitive.name in ('dot_general', 'conv_general_dilated') for v in e.invars}
    assert outputs[dtype].dtype == jnp.float32
  assert matmul_dtypes == {'float32': {'float32'}, 'bfloat16': {'bfloat16'}}
  np.testing.assert_allclose(outputs['bfloat16'], outputs['float32'], atol=0.1)


@pytest.mark.parametrize('field, value', [('policy_torso', 'huge'),
                                          ('critic_torso', 'tiny'),
                                          ('normalization', 'batch'),
                                          ('compute_dtype', 'float16')])
def test_config_refuses_unknown_torso_normalization_and_dtype(field, value):
  with pytest.raises(ValueError, match=f"unknown {field} '{value}'"):
    dataclasses.replace(TINY_CONFIG, **{field: value})


def test_group_normalization_refuses_widths_it_cannot_split():
  with pytest.raises(ValueError, match=r'divisible by 8 groups, got \[12\]'):
    dataclasses.replace(TINY_CONFIG, policy_layer_sizes=(12, 16), normalization='group')


def _linear_and_block_linear(width):
  """hk.Linear's and BlockLinear's init/apply pairs, under the same module name."""
  return [hk.without_apply_rng(hk.transform(
      lambda x, layer=layer: layer(width, name='layer')(x)))
          for layer in (hk.Linear, networks_lib.BlockLinear)]


@pytest.mark.parametrize('width', [32, networks_lib.ROW_MAJOR_GRADIENT_MIN_WIDTH])
def test_block_linear_has_hk_linears_parameters_values_and_gradients(width):
  x = np.random.default_rng(0).normal(size=(16, width)).astype(np.float32)
  linear, block = _linear_and_block_linear(width)
  params = linear.init(jax.random.PRNGKey(0), x)
  jax.tree.map(np.testing.assert_array_equal, block.init(jax.random.PRNGKey(0), x),
               params)
  loss = lambda transformed: lambda p, x: jnp.sum(jnp.sin(transformed.apply(p, x)))
  np.testing.assert_allclose(block.apply(params, x), linear.apply(params, x), rtol=1e-6)
  (want_params, want_x), (got_params, got_x) = (
      jax.grad(loss(t), argnums=(0, 1))(params, x) for t in (linear, block))
  np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6),
               got_params, want_params)


@pytest.mark.skipif(not networks_lib.SLOW_TRANSPOSED_MATMUL_ON_CPU
                    or jax.default_backend() != 'cpu',
                    reason='only XLA:CPU of jaxlib 0.6 has the slow transposed matmul')
def test_block_linear_input_gradient_has_no_transposed_matmul_on_cpu():
  """dy @ w.T contracts w over its minor axis (rhs_contracting_dims={1}), the form
  XLA:CPU runs slowly; BlockLinear's compiled input gradient has only row-major dots
  from ROW_MAJOR_GRADIENT_MIN_WIDTH on and for batches up to half the width, and
  elsewhere is hk.Linear's."""
  def compiled_gradients(width, batch=8):
    x = np.ones((batch, width), np.float32)
    for transformed in _linear_and_block_linear(width):
      params = transformed.init(jax.random.PRNGKey(0), x)
      gradient = jax.grad(lambda x, t=transformed, p=params: jnp.sum(t.apply(p, x) ** 2))
      yield jax.jit(gradient).lower(x).compile().as_text()
  linear, block = compiled_gradients(networks_lib.ROW_MAJOR_GRADIENT_MIN_WIDTH)
  assert 'rhs_contracting_dims={1}' in linear
  assert 'rhs_contracting_dims={1}' not in block and ' dot(' in block
  _, narrow_block = compiled_gradients(networks_lib.ROW_MAJOR_GRADIENT_MIN_WIDTH // 2)
  assert 'rhs_contracting_dims={1}' in narrow_block
  width = networks_lib.ROW_MAJOR_GRADIENT_MIN_WIDTH
  _, large_batch_block = compiled_gradients(width, batch=width // 2 + 1)
  assert 'rhs_contracting_dims={1}' in large_batch_block


def _windows_with_tied_maxima(x):
  """How many 3x3 stride-2 SAME windows of x [B, H, W, C] hold their maximum twice."""
  height, width = x.shape[1:3]
  ties = 0
  low = [max((-(-size // 2) - 1) * 2 + 3 - size, 0) // 2 for size in (height, width)]
  for i in range(-(-height // 2)):
    for j in range(-(-width // 2)):
      rows = slice(max(2 * i - low[0], 0), 2 * i - low[0] + 3)
      cols = slice(max(2 * j - low[1], 0), 2 * j - low[1] + 3)
      window = x[:, rows, cols]
      ties += np.sum((window == window.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2))
                     > 1)
  return ties


@pytest.mark.parametrize('shape', [(2, 12, 12, 3), (3, 7, 10, 2), (1, 5, 1, 4)])
def test_max_pool_has_hk_max_pools_values_and_gradient_ties_included(shape):
  """Integer values in a small range put several maxima in most windows: the gradient
  must go to each window's first, as reduce_window's does."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 3, size=shape).astype(np.float32)
  assert _windows_with_tied_maxima(x) > 0
  dy_seed = rng.normal(size=networks_lib.max_pool(x).shape).astype(np.float32)
  reference = lambda x: hk.max_pool(x, window_shape=3, strides=2, padding='SAME')
  np.testing.assert_array_equal(networks_lib.max_pool(x), reference(x))
  loss = lambda pool: lambda x: jnp.sum(pool(x) * dy_seed)
  want, got = (jax.grad(loss(pool))(x) for pool in (reference, networks_lib.max_pool))
  np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the CPU path is under test')
def test_max_pool_gradient_has_no_scatter_on_cpu():
  """XLA:CPU expands reduce_window's select-and-scatter gradient into a scatter."""
  x = np.ones((2, 8, 8, 3), np.float32)
  compiled = lambda pool: jax.jit(jax.grad(lambda x: jnp.sum(pool(x) ** 2))).lower(
      x).compile().as_text()
  assert ' scatter(' in compiled(
      lambda x: hk.max_pool(x, window_shape=3, strides=2, padding='SAME'))
  assert ' scatter(' not in compiled(networks_lib.max_pool)


@pytest.mark.parametrize('batch,channels', [
    (2 * networks_lib.KERNEL_GRADIENT_CHUNK, networks_lib.KERNEL_GRADIENT_MIN_CHANNELS),
    (3, 4)])
def test_conv2d_has_hk_conv2ds_parameters_values_and_gradients(batch, channels):
  """With two chunks and enough channels the kernel gradient is summed chunk by chunk
  on CPU; with 3 examples and 4 channels it is XLA's."""
  x = np.random.default_rng(0).normal(size=(batch, 6, 5, 3)).astype(np.float32)
  conv, chunked = (hk.without_apply_rng(hk.transform(lambda x, make=make: make(x)))
                   for make in (lambda x: hk.Conv2D(channels, 3, name='conv')(x),
                                lambda x: networks_lib.Conv2D(channels, name='conv')(x)))
  params = conv.init(jax.random.PRNGKey(0), x)
  jax.tree.map(np.testing.assert_array_equal, chunked.init(jax.random.PRNGKey(0), x),
               params)
  np.testing.assert_allclose(chunked.apply(params, x), conv.apply(params, x), rtol=1e-6)
  loss = lambda transformed: lambda p, x: jnp.sum(jnp.sin(transformed.apply(p, x)))
  (want_params, want_x), (got_params, got_x) = (
      jax.grad(loss(t), argnums=(0, 1))(params, x) for t in (conv, chunked))
  np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-6)
  # Summed in another order: float32 rounding of the largest terms.
  jax.tree.map(lambda g, w: np.testing.assert_allclose(
      g, w, rtol=1e-5, atol=1e-6 * np.abs(w).max()), got_params, want_params)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the CPU path is under test')
def test_conv2d_kernel_gradient_is_summed_over_chunks_on_cpu_from_min_channels():
  chunks = 3
  x = np.ones((chunks * networks_lib.KERNEL_GRADIENT_CHUNK, 6, 6, 2), np.float32)

  def convolutions_in_gradient(channels):
    transformed = hk.without_apply_rng(hk.transform(
        lambda x: networks_lib.Conv2D(channels, name='conv')(x)))
    params = transformed.init(jax.random.PRNGKey(0), x)
    hlo = jax.jit(jax.grad(lambda p: jnp.sum(transformed.apply(p, x) ** 2))).lower(
        params).compile().as_text()
    return hlo.count(' convolution(')
  # The forward pass and one kernel gradient a chunk (x is a constant) ...
  assert convolutions_in_gradient(networks_lib.KERNEL_GRADIENT_MIN_CHANNELS) == 1 + chunks
  # ... or one for the whole batch.
  assert convolutions_in_gradient(networks_lib.KERNEL_GRADIENT_MIN_CHANNELS // 2) == 2
