"""The MetaMimic learner: one pure, pmappable sgd_step over a TrainingState.

Each step updates two D4PG actor-critics on the same batch of n-step transitions: the
goal-conditioned imitation agent on the imitation reward and the task agent on the task
reward (off-policy, from the imitation agent's experience).
"""

import time
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import acme
from acme import types
from acme.utils import counting
from acme.utils import loggers
import jax
import jax.numpy as jnp
import optax

from metamimic_jax import jax_utils
from metamimic_jax import losses
from metamimic_jax import numerics
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.keys import IMITATION, TASK
from metamimic_jax.networks import ActorCriticNetworks, MetaMimicNetworks


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
SgdStep = Callable[[TrainingState, types.Transition], Tuple[TrainingState, Metrics]]


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


def make_optimizer(config: MetaMimicConfig) -> optax.GradientTransformation:
  """The critics' optimizer (and the policies', unless they have their own rate)."""
  return optax.adam(config.learning_rate)


def make_policy_optimizer(config: MetaMimicConfig) -> optax.GradientTransformation:
  return optax.adam(config.policy_learning_rate or config.learning_rate)


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
      target_policy_params=optax.periodic_update(
          policy_params, state.target_policy_params, new_steps, target_update_period),
      target_critic_params=optax.periodic_update(
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

  def sgd_step(state: TrainingState, transitions: types.Transition
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


class MetaMimicLearner(acme.Learner):
  """Runs the pmapped sgd_step on batches from a sharded, device-prefetched iterator."""

  # Names under which `get_variables` serves the policies.
  IMITATION_POLICY = 'imitation_policy'
  TASK_POLICY = 'task_policy'

  def __init__(self,
               networks: MetaMimicNetworks,
               random_key: jax.Array,
               iterator: Iterator[types.Transition],
               dummy_observation,
               dummy_action,
               config: MetaMimicConfig,
               devices: Optional[Sequence[jax.Device]] = None,
               counter: Optional[counting.Counter] = None,
               logger: Optional[loggers.Logger] = None,
               log_every_seconds: float = 10.0,
               task_only: bool = False):
    self._devices = list(devices or jax.local_devices())
    if config.batch_size % len(self._devices):
      raise ValueError(f'batch_size {config.batch_size} must be divisible by the '
                       f'{len(self._devices)} local devices the learner shards it over')
    self._iterator = iterator
    self._counter = counter or counting.Counter()
    self._logger = logger or loggers.make_default_logger('learner', save_data=False)
    self._log_every_seconds = log_every_seconds
    self._last_log = 0.0
    state = init_training_state(random_key, networks, dummy_observation, dummy_action,
                                config, task_only)
    self._state = jax_utils.replicate(state, self._devices)
    # No buffer donation: get_variables may read the previous state from another
    # (Courier) thread while a step runs.
    self._sgd_step = jax.pmap(
        numerics.with_finite_flag(make_sgd_step(networks, config, axis_name='devices'),
                                  online_parameters),
        axis_name='devices', devices=self._devices)
    self._timestamp = None

  def step(self) -> None:
    """One update; NonFiniteError (the state left as it was) if it is not finite."""
    transitions = next(self._iterator)
    state, metrics, finite = self._sgd_step(self._state, transitions)
    numerics.check(finite, lambda: int(jax_utils.get_from_first_device(state.steps)),
                   metrics, online_parameters(state))  # Raises NonFiniteError.
    self._state = state
    now = time.time()
    elapsed = 0.0 if self._timestamp is None else now - self._timestamp
    self._timestamp = now
    counts = self._counter.increment(steps=1, walltime=elapsed)
    if now - self._last_log >= self._log_every_seconds:
      self._last_log = now
      self._logger.write({**jax_utils.get_from_first_device(metrics), **counts})

  def get_variables(self, names: Sequence[str]) -> List[optax.Params]:
    state = self._state
    variables = {
        self.IMITATION_POLICY: lambda: state.imitation.policy_params,
        self.TASK_POLICY: lambda: state.task.policy_params,
    }
    return [jax_utils.get_from_first_device(variables[name]()) for name in names]

  def save(self) -> TrainingState:
    return jax_utils.get_from_first_device(self._state)

  def restore(self, state: TrainingState) -> None:
    self._state = jax_utils.replicate(state, self._devices)
