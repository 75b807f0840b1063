"""The core's losses compute what rlax computes (the core does not import rlax)."""

import jax
import jax.numpy as jnp
import numpy as np
import rlax

from metamimic_jax import losses


def test_categorical_td_loss_and_its_gradient_match_rlax():
  rng = np.random.default_rng(0)
  atoms = jnp.linspace(0.0, 10.0, 11)
  for _ in range(20):
    logits_tm1, logits_t = (jnp.asarray(rng.normal(size=11), jnp.float32)
                            for _ in range(2))
    r_t = jnp.float32(rng.uniform(-2, 3))  # Targets inside and outside the support.
    discount_t = jnp.float32(rng.choice([0.0, 0.5, 0.95, 1.3]))
    ours = lambda lt: losses.categorical_td_loss(lt, atoms, r_t, discount_t, logits_t)
    theirs = lambda lt: rlax.categorical_td_learning(atoms, lt, r_t, discount_t, atoms,
                                                     logits_t)
    np.testing.assert_allclose(ours(logits_tm1), theirs(logits_tm1), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(ours)(logits_tm1), jax.grad(theirs)(logits_tm1),
                               rtol=1e-5, atol=1e-7)


def test_projection_matches_rlax_on_an_uneven_support():
  rng = np.random.default_rng(1)
  z_q = jnp.asarray([-1.0, -0.5, 0.0, 2.0, 2.5, 6.0])
  z_p = jnp.asarray(rng.uniform(-3, 8, 9), jnp.float32)
  probs = jax.nn.softmax(jnp.asarray(rng.normal(size=9), jnp.float32))
  np.testing.assert_allclose(losses.categorical_projection(z_p, probs, z_q),
                             rlax.categorical_l2_project(z_p, probs, z_q), atol=1e-6)


def test_dpg_loss_and_its_gradient_match_rlax():
  rng = np.random.default_rng(2)
  for scale in (0.1, 1.0, 10.0):  # Inside and outside the clipping norm.
    a_t, dq_da = (jnp.asarray(rng.normal(size=4) * scale, jnp.float32) for _ in range(2))
    for clip in (True, False):
      ours = lambda a: losses.dpg_loss(a, dq_da, clip)
      theirs = lambda a: jnp.sum(rlax.dpg_loss(a, dq_da, 1.0 if clip else None))
      np.testing.assert_allclose(ours(a_t), theirs(a_t), rtol=1e-5)
      np.testing.assert_allclose(jax.grad(ours)(a_t), jax.grad(theirs)(a_t), rtol=1e-5)
