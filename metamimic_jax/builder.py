"""MetaMimicBuilder: the only place replay, adder, dataset, actors and learner are wired."""

from typing import Iterator, List, Optional, Sequence, Tuple, Union

from acme import adders
from acme import specs
from acme import types
from acme.utils import counting
from acme.utils import loggers
import jax
import reverb
import tensorflow as tf

from metamimic_jax import acting
from metamimic_jax import adders as adders_lib
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import jax_utils
from metamimic_jax import keys
from metamimic_jax import learner as learner_lib
from metamimic_jax import multihost
from metamimic_jax import networks as networks_lib
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import base as env_base


class MetaMimicBuilder:
  """Builds every MetaMimic component from one config and one domain.

  `task_only` builds the baseline of the task-policy experiment instead: the same D4PG
  learner trained on the task reward alone, without demonstrations, its actors running
  the task policy from the task's own initial states.
  """

  def __init__(self, config: MetaMimicConfig, domain: env_base.Domain,
               task_only: bool = False):
    if task_only and not config.train_task_policy:
      raise ValueError('a task-only agent trains the task policy: '
                       'train_task_policy must be True')
    self._config = config
    self._domain = domain
    self._task_only = task_only

  @property
  def config(self) -> MetaMimicConfig:
    return self._config

  @property
  def task_only(self) -> bool:
    return self._task_only

  @property
  def acting_policy(self) -> str:
    """The policy the training actors run: 'imitation', or 'task' for task-only."""
    return 'task' if self._task_only else 'imitation'

  def make_training_environment(
      self, demonstrations: Sequence[demos_lib.Demonstration], seed: int
  ) -> Union[env_base.DemoConditionedEnvironment, env_base.TaskEnvironment]:
    """The training actors' environment: imitation of `demonstrations`; task-only:
    fresh task episodes paying {'task': reward} (demonstrations unused)."""
    if self._task_only:
      return env_base.TaskEnvironment(self._domain, seed, keyed_reward=True,
                                      action_repeat=self._config.action_repeat)
    return self.make_demo_environment(demonstrations, seed)

  @property
  def reward_groups(self):
    return self._config.reward_groups or self._domain.default_reward_groups

  @property
  def policy_goal_keys(self) -> Optional[Tuple[str, ...]]:
    """The demo frame keys the imitation policy reads (None: all)."""
    return self._config.goal_keys or self._domain.default_goal_keys

  @property
  def goal_keys(self) -> Optional[Tuple[str, ...]]:
    """The demo frame keys the environment shows: the policy's, or all of them for a
    privileged critic (which reads their features)."""
    return None if self._config.privileged_critic else self.policy_goal_keys

  def make_demo_environment(self, demonstrations: Sequence[demos_lib.Demonstration],
                            seed: int) -> env_base.DemoConditionedEnvironment:
    return env_base.DemoConditionedEnvironment(
        self._domain, demonstrations, self.reward_groups, self.goal_keys,
        self._config.goal_horizon, seed, self._config.action_repeat)

  def make_task_environment(self, seed: int) -> env_base.TaskEnvironment:
    return env_base.TaskEnvironment(self._domain, seed,
                                    action_repeat=self._config.action_repeat)

  def make_networks(self, environment_spec: specs.EnvironmentSpec
                    ) -> networks_lib.MetaMimicNetworks:
    return networks_lib.make_networks(environment_spec, self._config,
                                      self.policy_goal_keys)

  def make_replay_tables(self, environment_spec: specs.EnvironmentSpec,
                         enforce_samples_per_insert: bool = True,
                         transitions_per_item: int = 1) -> List[reverb.Table]:
    """The experience memory, of items of `transitions_per_item` transitions (one from
    each environment an actor steps together); the config's sizes count transitions.

    Without `enforce_samples_per_insert` (single-process loops, which pace learning
    themselves) sampling needs only one item: a larger minimum could deadlock the loop,
    whose actor waits on the learner that waits on replay.
    """
    config = self._config
    if enforce_samples_per_insert:
      # An item sampled and an item inserted are both `transitions_per_item`
      # transitions, so samples per insert is the same counted in items.
      min_items = -(-config.min_replay_size // transitions_per_item)
      tolerance = config.samples_per_insert_tolerance_rate * config.samples_per_insert
      limiter = reverb.rate_limiters.SampleToInsertRatio(
          min_size_to_sample=min_items,
          samples_per_insert=config.samples_per_insert,
          error_buffer=max(min_items * tolerance,
                           2 * config.batch_size / transitions_per_item))
    else:
      limiter = reverb.rate_limiters.MinSize(1)
    return [reverb.Table(
        name=config.replay_table_name,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=max(1, config.max_replay_size // transitions_per_item),
        rate_limiter=limiter,
        signature=self.make_transition_layout(environment_spec).signature())]

  def make_transition_layout(self, environment_spec: specs.EnvironmentSpec
                             ) -> adders_lib.TransitionLayout:
    """How replay stores transitions: packed, so Reverb handles a few columns."""
    return adders_lib.TransitionLayout(environment_spec)

  def make_adder(self, replay_client: reverb.Client,
                 environment_spec: specs.EnvironmentSpec, num_environments: int = 1
                 ) -> adders_lib.NStepTransitionAdder:
    """Acme's n-step transitions of `num_environments` environments acting together,
    written by our leaner adder (see adders.py), an item holding one from each."""
    return adders_lib.NStepTransitionAdder(
        replay_client, self._config.replay_table_name, self._config.n_step,
        self._config.discount, self.make_transition_layout(environment_spec),
        num_environments)

  def make_dataset_iterator(self, replay_server_address: str,
                            environment_spec: specs.EnvironmentSpec,
                            devices: Optional[Sequence[jax.Device]] = None,
                            transitions_per_item: int = 1
                            ) -> Iterator[types.Transition]:
    """Batches of (unpacked) transitions, split over `devices` and prefetched onto them;
    with `sgd_steps_per_call` K, K batches per item, [devices, K, batch / devices, ...].

    Replay items of several transitions (`transitions_per_item` as the actors write
    them; items of another size, from a resumed replay, are read as well) are split
    into transitions before batching. With several learner processes (multi-host) each
    samples its own share of the batch, batch_size / num_processes, from
    `replay_server_address`.
    """
    steps = self._config.sgd_steps_per_call
    devices = devices or jax.local_devices()
    batch_size = multihost.process_batch_size(self._config.batch_size,
                                              multihost.pmap_devices(devices))

    def worker_dataset(unused_index):
      items = reverb.TrajectoryDataset.from_table_signature(
          server_address=replay_server_address, table=self._config.replay_table_name,
          max_in_flight_samples_per_worker=max(
              1, 2 * batch_size * steps // transitions_per_item))
      return (items.map(lambda sample: sample.data).unbatch()
              .batch(batch_size * steps, drop_remainder=True))

    # Acme's make_reverb_dataset, with items split: two workers, interleaved.
    dataset = tf.data.Dataset.range(2).interleave(
        worker_dataset, cycle_length=2, num_parallel_calls=2, deterministic=False
    ).prefetch(self._config.prefetch_size)
    layout = self.make_transition_layout(environment_spec)
    transitions = (layout.unpack(item) for item in dataset.as_numpy_iterator())
    return jax_utils.sharded_prefetch(transitions, devices,
                                      self._config.prefetch_size, steps)

  def make_learner(self, random_key: jax.Array,
                   networks: networks_lib.MetaMimicNetworks,
                   iterator: Iterator[types.Transition],
                   environment_spec: specs.EnvironmentSpec,
                   devices: Optional[Sequence[jax.Device]] = None,
                   counter: Optional[counting.Counter] = None,
                   logger: Optional[loggers.Logger] = None,
                   processes: multihost.ProcessSettings = multihost.ProcessSettings()
                   ) -> learner_lib.MetaMimicLearner:
    """The learner; `processes`: this process's place in a multi-host learner job."""
    dummy_observation, dummy_action = networks_lib.dummy_inputs(environment_spec)
    return learner_lib.MetaMimicLearner(
        networks, random_key, iterator, dummy_observation, dummy_action, self._config,
        devices=devices, counter=counter, logger=logger, task_only=self._task_only,
        process_id=processes.process_id, num_processes=processes.num_processes)

  def make_actor(self, random_key: jax.Array,
                 networks: networks_lib.MetaMimicNetworks,
                 environment_spec: specs.EnvironmentSpec,
                 variable_source,
                 adder: Optional[adders.Adder] = None,
                 policy: str = 'imitation',
                 sigma: Optional[float] = None,
                 variable_update_period: int = 1,
                 asynchronous_variables: bool = False) -> acting.MetaMimicActor:
    """An actor for the 'imitation' or 'task' policy; sigma=0 for evaluation.

    Without `sigma`, the actor explores as the config says (`sigma`, and per episode
    down to `episode_min_sigma` if set); a given `sigma` is used for every step.
    """
    return acting.MetaMimicActor(
        random_key=random_key, adder=adder, **self._acting_parts(
            networks, environment_spec, variable_source, policy, sigma,
            variable_update_period, asynchronous_variables))

  def make_actor_batch(self, random_keys: Sequence[jax.Array],
                       networks: networks_lib.MetaMimicNetworks,
                       environment_spec: specs.EnvironmentSpec,
                       variable_source,
                       adder: Optional[adders_lib.NStepTransitionAdder] = None,
                       policy: str = 'imitation',
                       sigma: Optional[float] = None,
                       variable_update_period: int = 1,
                       asynchronous_variables: bool = False) -> acting.ActorBatch:
    """make_actor's actor for each of len(random_keys) environments, acting together
    (one policy call a step for all; see acting.ActorBatch), with one adder for all
    (`make_adder` for that many environments)."""
    return acting.ActorBatch(
        random_keys=random_keys, adder=adder, **self._acting_parts(
            networks, environment_spec, variable_source, policy, sigma,
            variable_update_period, asynchronous_variables))

  def _acting_parts(self, networks, environment_spec, variable_source, policy, sigma,
                    variable_update_period, asynchronous_variables):
    """An actor's keyword arguments other than its random key(s) and adder(s)."""
    if policy not in ('imitation', 'task'):
      raise ValueError(f"policy must be 'imitation' or 'task', got {policy!r}")
    agent_networks = getattr(networks, policy)
    learner_class = learner_lib.MetaMimicLearner
    variable_name = (learner_class.IMITATION_POLICY if policy == 'imitation'
                     else learner_class.TASK_POLICY)
    client = jax_utils.VariableClient(variable_source, [variable_name],
                                      update_period=variable_update_period,
                                      asynchronous=asynchronous_variables)
    if policy == 'task':  # The task policy reads (and packs) only the observation.
      environment_spec = environment_spec._replace(observations={
          keys.OBSERVATION: environment_spec.observations[keys.OBSERVATION]})
    if sigma is None:
      sigma, min_sigma = self._config.sigma, self._config.episode_min_sigma
    else:
      min_sigma = None
    return dict(networks=agent_networks, environment_spec=environment_spec, sigma=sigma,
                variable_client=client, min_sigma=min_sigma)
