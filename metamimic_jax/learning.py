"""The MetaMimic learning step: one pure, pmappable sgd_step over a TrainingState.

Each step updates two D4PG actor-critics on the same batch of n-step transitions: the
goal-conditioned imitation agent on the imitation reward and the task agent on the task
reward (off-policy, from the imitation agent's experience). Part of the portable core:
it imports no Acme, Reverb, Launchpad or TensorFlow (`learner.py` runs it under Acme).
"""

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from metamimic_jax import losses
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.keys import IMITATION, TASK
from metamimic_jax.networks import ActorCriticNetworks, MetaMimicNetworks


class Transition(NamedTuple):
  """A batch of n-step transitions: acme.types.Transition's fields in its order, so the
  batches of Acme's Reverb dataset are steps' inputs as they come."""
  observation: Any
  action: Any
  reward: Any  # {'imitation': r, 'task': r}.
  discount: Any  # Likewise by key; it excludes one factor of the config's discount.
  next_observation: Any
  extras: Any = ()


class ActorCriticState(NamedTuple):
  policy_params: optax.Params
  critic_params: optax.Params
  target_policy_params: optax.Params
  target_critic_params: optax.Params
  policy_opt_state: optax.OptState
  critic_opt_state: optax.OptState


class TrainingState(NamedTuple):
  imitation: Optional[ActorCriticState]  # None for the task-only agent.
  task: Optional[ActorCriticState]  # None when the task policy is not trained.
  steps: jnp.ndarray


Metrics = Dict[str, jnp.ndarray]
SgdStep = Callable[[TrainingState, Transition], Tuple[TrainingState, Metrics]]


def init_actor_critic(key: jax.Array, networks: ActorCriticNetworks, dummy_observation,
                      dummy_action, critic_optimizer: optax.GradientTransformation,
                      policy_optimizer: optax.GradientTransformation
                      ) -> ActorCriticState:
  policy_key, critic_key = jax.random.split(key)
  policy_params = networks.policy.init(policy_key, dummy_observation)
  critic_params = networks.critic.init(critic_key, dummy_observation, dummy_action)
  return ActorCriticState(
      policy_params=policy_params, critic_params=critic_params,
      target_policy_params=policy_params, target_critic_params=critic_params,
      policy_opt_state=policy_optimizer.init(policy_params),
      critic_opt_state=critic_optimizer.init(critic_params))


def init_training_state(key: jax.Array, networks: MetaMimicNetworks, dummy_observation,
                        dummy_action, config: MetaMimicConfig,
                        task_only: bool = False) -> TrainingState:
  """Both agents' states; `task_only`: only the task agent's (D4PG on the task alone)."""
  imitation_key, task_key = jax.random.split(key)
  optimizers = make_optimizer(config), make_policy_optimizer(config)
  return TrainingState(
      imitation=(None if task_only else
                 init_actor_critic(imitation_key, networks.imitation,
                                   dummy_observation, dummy_action, *optimizers)),
      task=(init_actor_critic(task_key, networks.task, dummy_observation,
                              dummy_action, *optimizers)
            if config.train_task_policy or task_only else None),
      steps=jnp.zeros((), jnp.int32))


def _step_size(config: MetaMimicConfig, rate: float) -> optax.ScalarOrSchedule:
  """`rate`, or its cosine decay when the config sets learning_rate_decay_steps."""
  if config.learning_rate_decay_steps is None:
    return rate
  return optax.cosine_decay_schedule(rate, config.learning_rate_decay_steps,
                                     alpha=config.final_learning_rate_fraction)


def make_optimizer(config: MetaMimicConfig) -> optax.GradientTransformation:
  """The critics' optimizer (and the policies', unless they have their own rate)."""
  return optax.adam(_step_size(config, config.learning_rate))


def make_policy_optimizer(config: MetaMimicConfig) -> optax.GradientTransformation:
  return optax.adam(_step_size(config,
                               config.policy_learning_rate or config.learning_rate))


def periodic_update(new_params: optax.Params, old_params: optax.Params,
                    steps: jnp.ndarray, update_period: int) -> optax.Params:
  """`new_params` when `steps` is a multiple of `update_period`, else `old_params`.

  optax.periodic_update's result, as an elementwise select: XLA fuses it into the
  optimizer's update, where the lax.cond optax uses copies the whole chosen tree on
  every step (measured on CPU: 15% of the large torso's step).
  """
  update = steps % update_period == 0
  return jax.tree.map(lambda new, old: jnp.where(update, new, old), new_params,
                      old_params)


def actor_critic_update(state: ActorCriticState, networks: ActorCriticNetworks,
                        optimizer: optax.GradientTransformation, o_tm1, a_tm1, r_t,
                        discount_t, o_t, steps: jnp.ndarray, target_update_period: int,
                        clipping: bool = True, axis_name: Optional[str] = None,
                        preactivation_penalty: float = 0.0,
                        policy_optimizer: Optional[optax.GradientTransformation] = None,
                        policy_warmup_steps: int = 0
                        ) -> Tuple[ActorCriticState, Metrics]:
  """One D4PG update of a policy and critic; gradients are pmean'd over `axis_name`.

  `optimizer` updates the critic, and the policy too unless `policy_optimizer` is given.
  The policy (parameters and optimizer state) stays as it is while
  `steps < policy_warmup_steps`, so that it follows a critic that has learned something.
  """
  (critic_loss, q_mean), critic_grads = jax.value_and_grad(
      losses.critic_loss, has_aux=True)(
          state.critic_params, state.target_policy_params, state.target_critic_params,
          networks, o_tm1, a_tm1, r_t, discount_t, o_t)
  policy_loss, policy_grads = jax.value_and_grad(losses.policy_loss)(
      state.policy_params, state.critic_params, networks, o_t, clipping,
      preactivation_penalty)
  if axis_name is not None:
    critic_grads, policy_grads = jax.lax.pmean((critic_grads, policy_grads), axis_name)
  critic_updates, critic_opt_state = optimizer.update(critic_grads,
                                                      state.critic_opt_state)
  policy_updates, policy_opt_state = (policy_optimizer or optimizer).update(
      policy_grads, state.policy_opt_state)
  critic_params = optax.apply_updates(state.critic_params, critic_updates)
  policy_params = optax.apply_updates(state.policy_params, policy_updates)
  if policy_warmup_steps:
    warm = steps >= policy_warmup_steps
    policy_params, policy_opt_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(warm, new, old), (policy_params, policy_opt_state),
        (state.policy_params, state.policy_opt_state))
  new_steps = steps + 1
  new_state = ActorCriticState(
      policy_params=policy_params, critic_params=critic_params,
      target_policy_params=periodic_update(
          policy_params, state.target_policy_params, new_steps, target_update_period),
      target_critic_params=periodic_update(
          critic_params, state.target_critic_params, new_steps, target_update_period),
      policy_opt_state=policy_opt_state, critic_opt_state=critic_opt_state)
  metrics = {'critic_loss': critic_loss, 'policy_loss': policy_loss, 'q_mean': q_mean}
  if axis_name is not None:
    metrics = jax.lax.pmean(metrics, axis_name)
  return new_state, metrics


def make_sgd_step(networks: MetaMimicNetworks, config: MetaMimicConfig,
                  axis_name: Optional[str] = None) -> SgdStep:
  """The pure learner step; pmap it with the same `axis_name` for data parallelism.

  Transitions are Acme n-step transitions whose reward and discount are dicts with keys
  'imitation' and 'task'; their discount excludes one factor of `config.discount`.
  """
  optimizer = make_optimizer(config)
  policy_optimizer = make_policy_optimizer(config)

  def sgd_step(state: TrainingState, transitions: Transition
               ) -> Tuple[TrainingState, Metrics]:

    def update(agent_state, agent_networks, key):
      return actor_critic_update(
          agent_state, agent_networks, optimizer, transitions.observation,
          transitions.action, transitions.reward[key],
          config.discount * transitions.discount[key], transitions.next_observation,
          state.steps, config.target_update_period, config.clipping, axis_name,
          config.policy_preactivation_penalty, policy_optimizer,
          config.policy_warmup_steps)

    imitation, task, metrics = None, None, {}
    if state.imitation is not None:
      imitation, imitation_metrics = update(state.imitation, networks.imitation,
                                            IMITATION)
      metrics.update({f'imitation/{k}': v for k, v in imitation_metrics.items()})
    if state.task is not None:
      task, task_metrics = update(state.task, networks.task, TASK)
      metrics.update({f'task/{k}': v for k, v in task_metrics.items()})
    return TrainingState(imitation, task, state.steps + 1), metrics

  return sgd_step


def online_parameters(state: TrainingState) -> Dict[str, optax.Params]:
  """The parameters a step trains, by name (every step checks they stay finite)."""
  agents = {IMITATION: state.imitation, TASK: state.task}
  return {f'{name}/{part}': getattr(agent, part) for name, agent in agents.items()
          if agent is not None for part in ('policy_params', 'critic_params')}


def scan_sgd_steps(sgd_step: SgdStep) -> SgdStep:
  """`sgd_step` over batches stacked on a leading axis [K, B, ...], K steps in one call
  (lax.scan: one dispatch, one compiled loop); the metrics are the last step's."""

  def sgd_steps(state: TrainingState, transitions: Transition
                ) -> Tuple[TrainingState, Metrics]:
    state, metrics = jax.lax.scan(sgd_step, state, transitions)
    return state, jax.tree.map(lambda m: m[-1], metrics)

  return sgd_steps
