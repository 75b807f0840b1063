import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax import losses


def test_categorical_td_loss_hand_computed():
  atoms = jnp.array([0., 1., 2.])
  logits_tm1 = jnp.log(jnp.array([0.2, 0.3, 0.5]))
  logits_t = jnp.log(jnp.array([0.5, 0.5, 1e-30]))
  # Target support 0.5 + 0.5 * atoms = [0.5, 1, 1.5] with mass [0.5, 0.5, 0] projects
  # onto atoms as [0.25, 0.25 + 0.5, 0]; loss = -sum target * log p_tm1.
  expected = -(0.25 * np.log(0.2) + 0.75 * np.log(0.3))
  loss = losses.categorical_td_loss(logits_tm1, atoms, jnp.float32(0.5),
                                    jnp.float32(0.5), logits_t)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_categorical_td_loss_termination_ignores_next_state():
  atoms = jnp.array([0., 1., 2.])
  logits_tm1 = jnp.zeros(3)
  loss_a = losses.categorical_td_loss(logits_tm1, atoms, 1.0, 0.0, jnp.array([9., 0, 0]))
  loss_b = losses.categorical_td_loss(logits_tm1, atoms, 1.0, 0.0, jnp.array([0., 0, 9]))
  # All mass lands on atom 1: loss = -log(1/3).
  np.testing.assert_allclose([loss_a, loss_b], [np.log(3.0)] * 2, rtol=1e-5)


def test_categorical_td_loss_does_not_differentiate_the_target():
  atoms = jnp.array([0., 1., 2.])
  grad = jax.grad(lambda lt: losses.categorical_td_loss(jnp.zeros(3), atoms, 0.5, 0.9, lt))(
      jnp.array([1., 2., 3.]))
  np.testing.assert_array_equal(grad, np.zeros(3))


def test_dpg_loss_value_and_gradient():
  a_t = jnp.array([0.1, -0.4])
  dq_da = jnp.array([0.5, -3.0])
  clipped = np.array([0.5, -3.0]) / np.hypot(0.5, 3.0)  # Scaled to L2 norm 1.
  np.testing.assert_allclose(losses.dpg_loss(a_t, dq_da), 0.5 * np.sum(clipped**2),
                             rtol=1e-6)
  np.testing.assert_allclose(jax.grad(losses.dpg_loss)(a_t, dq_da), -clipped, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(losses.dpg_loss)(a_t, dq_da, False),
                             -np.asarray(dq_da), rtol=1e-6)


def test_mean_value():
  logits = jnp.log(jnp.array([[0.2, 0.3, 0.5], [1.0, 1e-30, 1e-30]]))
  np.testing.assert_allclose(losses.mean_value(logits, jnp.array([0., 1., 2.])),
                             [1.3, 0.0], atol=1e-6)
