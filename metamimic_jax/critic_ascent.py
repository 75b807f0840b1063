"""Does a trained critic know a better action than its policy takes? Acting by ascent on Q.

The policy follows its critic's action gradient, so a policy can be no more precise than
that gradient. `CriticAscentActor` acts with the policy's action refined by a few
normalized gradient-ascent steps on Q(s, .), keeping the best Q seen. If the refined
actions imitate no better than the policy's own, the critic's gradient is not accurate
where the policy acts, and what limits the policy is the critic, not its own update
(WORKSPACE_NOTES.md, "Where the remaining 4 cm comes from"). benchmarks/critic_ascent.py
runs it on a saved run.
"""

from typing import Callable, List, NamedTuple, Tuple

from acme import specs
import chex
import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax import evaluation
from metamimic_jax import losses
from metamimic_jax.networks import ActorCriticNetworks

# Guards the normalization of a zero gradient (the step is then zero).
_EPSILON = 1e-12


def ascend(q: Callable[[chex.Array], chex.Array], action: chex.Array,
           minimum: chex.Array, maximum: chex.Array, step_size: float,
           num_steps: int) -> Tuple[chex.Array, chex.Array]:
  """`action` after `num_steps` steps of length `step_size` along dq/da, each clipped to
  [minimum, maximum]; returns the visited action of highest q, `action` itself when
  none beats it, and that q. Unbatched: `action` is [A], q maps [A] to a scalar."""
  chex.assert_rank(action, 1)
  q_and_grad = jax.value_and_grad(q)

  def step(_, carry):
    current, best, best_q = carry
    _, gradient = q_and_grad(current)
    current = jnp.clip(
        current + step_size * gradient / (jnp.linalg.norm(gradient) + _EPSILON),
        minimum, maximum)
    current_q = q(current)
    better = current_q > best_q
    return (current, jnp.where(better, current, best),
            jnp.where(better, current_q, best_q))

  _, best, best_q = jax.lax.fori_loop(0, num_steps, step, (action, action, q(action)))
  return best, best_q


class AscentRecord(NamedTuple):
  """One decision of a `CriticAscentActor`."""
  move: float  # |refined action - policy action|, in action units.
  q_gain: float  # Q(s, refined) - Q(s, policy action), in return units.
  dq_du_norm: float  # |dQ/du| at the policy's action; u is the pre-tanh activation.
  penalty_gradient_norm: float  # |d(penalty)/du| = |2 lambda u|.
  cosine: float  # cos(dQ/du, -d(penalty)/du): +1 when the penalty pulls along dQ/du.


class CriticAscentActor(evaluation.EvaluationActor):
  """Acts with the policy's action refined by `ascend` on the critic's mean value.

  `step_size` 0 acts with the policy itself. Every decision appends an `AscentRecord`
  to `records`, including the balance in pre-tanh space between the critic's gradient
  and the pre-tanh penalty's (`preactivation_penalty` lambda, as in the config).
  It does not explore.
  """

  def __init__(self, networks: ActorCriticNetworks, policy_params, critic_params,
               environment_spec: specs.EnvironmentSpec, step_size: float,
               num_steps: int, preactivation_penalty: float):
    minimum = jnp.asarray(environment_spec.actions.minimum, jnp.float32)
    maximum = jnp.asarray(environment_spec.actions.maximum, jnp.float32)
    self.records: List[AscentRecord] = []

    def decide(observation):
      observation = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], observation)
      q = lambda a: losses.mean_value(
          networks.critic.apply(critic_params, observation, a[None]), networks.atoms)[0]
      u = networks.policy_preactivation.apply(policy_params, observation)
      action = networks.squash(u)[0]
      dq_du = jax.grad(lambda u: q(networks.squash(u)[0]))(u)[0]
      penalty_gradient = 2.0 * preactivation_penalty * u[0]
      refined, refined_q = ascend(q, action, minimum, maximum, step_size, num_steps)
      cosine = -jnp.vdot(dq_du, penalty_gradient) / (
          jnp.linalg.norm(dq_du) * jnp.linalg.norm(penalty_gradient) + _EPSILON)
      record = (jnp.linalg.norm(refined - action), refined_q - q(action),
                jnp.linalg.norm(dq_du), jnp.linalg.norm(penalty_gradient), cosine)
      return refined, record

    self._decide = jax.jit(decide)

  def select_action(self, observation) -> np.ndarray:
    action, record = self._decide(observation)
    self.records.append(AscentRecord(*(float(x) for x in record)))
    return np.asarray(action, np.float32)
