"""D4PG losses as pure functions any Acme agent can import.

`categorical_td_loss` and `dpg_loss` are unbatched in rlax's style (`_tm1`/`_t` names,
chex asserts; the caller vmaps). `critic_loss` and `policy_loss` are their batched forms
over an `ActorCriticNetworks` and a batch of n-step transitions.
"""

from typing import Tuple

import chex
import jax
import jax.numpy as jnp
import rlax

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
  return rlax.categorical_td_learning(
      v_atoms_tm1=atoms, v_logits_tm1=logits_tm1, r_t=r_t, discount_t=discount_t,
      v_atoms_t=atoms, v_logits_t=jax.lax.stop_gradient(logits_t))


def dpg_loss(a_t: chex.Array, dq_da_t: chex.Array, clip: bool = True) -> chex.Array:
  """Deterministic policy gradient loss, unbatched: its gradient w.r.t. a_t is -dQ/da.

  With `clip`, dQ/da is first scaled to an L2 norm of at most 1 (as Acme's D4PG).
  """
  chex.assert_rank([a_t, dq_da_t], 1)
  chex.assert_equal_shape([a_t, dq_da_t])
  return jnp.sum(rlax.dpg_loss(a_t, dq_da_t, dqda_clipping=1.0 if clip else None))


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
