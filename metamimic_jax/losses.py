"""D4PG losses as pure functions any agent can import.

`categorical_td_loss` and `dpg_loss` are unbatched in rlax's style (`_tm1`/`_t` names,
chex asserts; the caller vmaps). `critic_loss` and `policy_loss` are their batched forms
over an `ActorCriticNetworks` and a batch of n-step transitions.

They compute what rlax's `categorical_td_learning` and `dpg_loss` compute
(tests/test_losses.py compares them) without importing rlax: rlax imports distrax and
TensorFlow Probability, which imports TensorFlow wherever it is installed, and the core
must not (see WORKSPACE_NOTES.md, issue 11).
"""

from typing import Tuple

import chex
import jax
import jax.numpy as jnp

from metamimic_jax.networks import ActorCriticNetworks


def categorical_td_loss(logits_tm1: chex.Array, atoms: chex.Array, r_t: chex.Numeric,
                        discount_t: chex.Numeric, logits_t: chex.Array) -> chex.Array:
  """Cross-entropy to the projected target r_t + discount_t * Z_t (C51/D4PG), unbatched.

  Args:
    logits_tm1: logits of Z(s_tm1, a_tm1) over `atoms`, [num_atoms].
    atoms: the fixed support shared by both distributions, [num_atoms].
    r_t: the (n-step) reward.
    discount_t: the (n-step) discount, 0 at termination.
    logits_t: target-network logits of Z(s_t, pi(s_t)), [num_atoms].
  """
  chex.assert_rank([logits_tm1, atoms, r_t, discount_t, logits_t], [1, 1, 0, 0, 1])
  chex.assert_equal_shape([logits_tm1, atoms, logits_t])
  target = categorical_projection(r_t + discount_t * atoms,
                                  jax.nn.softmax(jax.lax.stop_gradient(logits_t)), atoms)
  return -jnp.sum(target * jax.nn.log_softmax(logits_tm1))


def categorical_projection(z_p: chex.Array, probs: chex.Array,
                           z_q: chex.Array) -> chex.Array:
  """Projects the distribution `probs` on atoms `z_p` onto the sorted support `z_q`.

  C51's projection (rlax's `categorical_l2_project`): each atom's mass, clipped into
  [z_q[0], z_q[-1]], is shared between its two neighbours in `z_q` in proportion to
  nearness. Returns probabilities over `z_q`.
  """
  chex.assert_rank([z_p, probs, z_q], 1)
  chex.assert_equal_shape([z_p, probs])
  z_p = jnp.clip(z_p, z_q[0], z_q[-1])
  delta = z_p[:, None] - z_q[None, :]  # [p, q]
  gap_above = jnp.concatenate([z_q[1:], z_q[-1:]]) - z_q  # 0 for the last atom.
  gap_below = z_q - jnp.concatenate([z_q[:1], z_q[:-1]])  # 0 for the first atom.
  gap = jnp.where(delta >= 0, gap_above, gap_below)
  inverse_gap = jnp.where(gap > 0, 1.0 / jnp.where(gap > 0, gap, 1.0), 0.0)
  weights = jnp.clip(1.0 - jnp.abs(delta) * inverse_gap, 0.0, 1.0)
  return jnp.sum(weights * probs[:, None], axis=0)


def dpg_loss(a_t: chex.Array, dq_da_t: chex.Array, clip: bool = True) -> chex.Array:
  """Deterministic policy gradient loss, unbatched: its gradient w.r.t. a_t is -dQ/da.

  With `clip`, dQ/da is first scaled to an L2 norm of at most 1 (as Acme's D4PG).
  """
  chex.assert_rank([a_t, dq_da_t], 1)
  chex.assert_equal_shape([a_t, dq_da_t])
  if clip:
    dq_da_t = dq_da_t / jnp.maximum(jnp.linalg.norm(dq_da_t), 1.0)
  target = jax.lax.stop_gradient(a_t + dq_da_t)
  return 0.5 * jnp.sum(jnp.square(target - a_t))


def mean_value(logits: chex.Array, atoms: chex.Array) -> chex.Array:
  """E[Z] of a categorical distribution over `atoms` (any leading batch axes)."""
  return jnp.sum(jax.nn.softmax(logits) * atoms, axis=-1)


def critic_loss(critic_params, target_policy_params, target_critic_params,
                networks: ActorCriticNetworks, o_tm1, a_tm1: chex.Array,
                r_t: chex.Array, discount_t: chex.Array, o_t
                ) -> Tuple[chex.Array, chex.Array]:
  """Mean categorical TD loss over a batch, and the batch's mean Q(s_tm1, a_tm1)."""
  logits_tm1 = networks.critic.apply(critic_params, o_tm1, a_tm1)
  a_t = networks.policy.apply(target_policy_params, o_t)
  logits_t = networks.critic.apply(target_critic_params, o_t, a_t)
  losses = jax.vmap(categorical_td_loss, in_axes=(0, None, 0, 0, 0))(
      logits_tm1, networks.atoms, r_t, discount_t, logits_t)
  return jnp.mean(losses), jnp.mean(mean_value(logits_tm1, networks.atoms))


def policy_loss(policy_params, critic_params, networks: ActorCriticNetworks, o_t,
                clip: bool = True, preactivation_penalty: float = 0.0) -> chex.Array:
  """Mean DPG loss over a batch: ascends E[Q(s_t, pi(s_t))].

  `preactivation_penalty` adds that times the mean squared pre-tanh policy output: it
  keeps the policy out of the tanh's flat tails, where no gradient could bring it back.
  """
  preactivation = networks.policy_preactivation.apply(policy_params, o_t)
  a_t = networks.squash(preactivation)
  batch_size = a_t.shape[0]

  def q_of_action(a):
    return jnp.sum(mean_value(networks.critic.apply(critic_params, o_t, a),
                              networks.atoms))

  dq_da_t = jax.grad(q_of_action)(a_t)
  losses = jax.vmap(dpg_loss, in_axes=(0, 0, None))(
      a_t.reshape(batch_size, -1), dq_da_t.reshape(batch_size, -1), clip)
  penalty = jnp.mean(jnp.sum(jnp.square(preactivation), axis=-1))
  return jnp.mean(losses) + preactivation_penalty * penalty
