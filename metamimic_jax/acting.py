"""Policies, the MetaMimic actor (an `acme.core.Actor`) and a batch of actors.

Acting is one step at a time, so the policy call's fixed cost dominates: a jitted call
pays per argument leaf. The actor therefore packs the observation into one flat float32
vector on the host (its uint8 images stay separate arrays), the jitted policy unpacks it
with static slices, and the exploration noise is drawn with numpy on the host: one call
takes the parameters and one array (plus any images) and returns the actions. An adder
that stores observations packed the same way gets the packed observation the policy
then reads, so each observation is packed once.

`ActorBatch` acts in several environments with one policy call a step for all of them:
on a CPU the call and its eviction of the simulator's caches cost more than the call's
arithmetic, so a batch pays them once for all its environments. Each environment keeps
its own exploration, exactly as one `MetaMimicActor` each would, and one adder writes
all their transitions, an item holding one from each environment.
"""

from typing import Callable, List, Optional, Sequence, Tuple

from acme import adders as acme_adders
from acme import core
from acme import specs
import dm_env
import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax import adders as adders_lib
from metamimic_jax import jax_utils
from metamimic_jax import packing
from metamimic_jax.networks import ActorCriticNetworks

# Process-wide (every process that builds actors imports this): a batch-1 policy call is
# shorter than the hand-off to JAX's CPU dispatch thread, so CPU computations run
# in the calling thread (0.5x the actor's CPU time per call here).
jax.config.update('jax_cpu_enable_async_dispatch', False)

# policy(params, packed observations [B, ...]) -> deterministic actions [B, ...].
Policy = Callable[[object, packing.Packed], jnp.ndarray]


def make_policy(networks: ActorCriticNetworks, packer: packing.ObservationPacker
                ) -> Policy:
  """The deterministic policy on a batch of packed observations, jitted."""
  return jax.jit(lambda params, packed: networks.policy.apply(params,
                                                              packer.unpack(packed)))


class _Explorer:
  """One environment's exploration: Gaussian noise of `sigma` half-ranges, clipped to
  the action spec; given `min_sigma`, a sigma drawn log-uniformly from [min_sigma,
  sigma] at each episode's start."""

  def __init__(self, action_spec: specs.BoundedArray, sigma: float,
               random_key: jax.Array, min_sigma: Optional[float]):
    self._minimum = np.asarray(action_spec.minimum, np.float32)
    self._maximum = np.asarray(action_spec.maximum, np.float32)
    self._rng = np.random.default_rng(np.asarray(jax.random.key_data(random_key)))
    self._sigma_range = None if min_sigma is None else (min_sigma, sigma)
    self._set_sigma(sigma)

  def _set_sigma(self, sigma: float) -> None:
    self.sigma = sigma
    self._noise_scale = np.float32(sigma * 0.5) * (self._maximum - self._minimum)

  def start_episode(self) -> None:
    if self._sigma_range is not None:
      self._set_sigma(float(np.exp(self._rng.uniform(*np.log(self._sigma_range)))))

  def explore(self, action: np.ndarray) -> np.ndarray:
    if self.sigma == 0:
      return action
    noise = self._rng.standard_normal(action.shape, np.float32) * self._noise_scale
    return np.clip(action + noise, self._minimum, self._maximum)


class ActorBatch:
  """Acts in `len(random_keys)` environments with one policy call for all of them.

  Environment i explores with its own noise stream (seeded by random_keys[i]): the
  same actions as a MetaMimicActor given that key. Its transitions go to `adder` as
  environment i; with one environment any Acme adder serves, with several an
  `adders.NStepTransitionAdder` for that many. The policy's parameters come from one
  VariableClient.
  """

  def __init__(self, networks: ActorCriticNetworks,
               environment_spec: specs.EnvironmentSpec, sigma: float,
               random_keys: Sequence[jax.Array],
               variable_client: jax_utils.VariableClient,
               adder: Optional[acme_adders.Adder] = None,
               min_sigma: Optional[float] = None):
    self._packer = packing.ObservationPacker(environment_spec.observations)
    self._policy = make_policy(networks, self._packer)
    self._explorers = [_Explorer(environment_spec.actions, sigma, key, min_sigma)
                       for key in random_keys]
    self._variable_client = variable_client
    self._adder = adder
    self._adder_is_ours = isinstance(adder, adders_lib.NStepTransitionAdder)
    if adder is not None and (
        adder.num_environments != len(random_keys) if self._adder_is_ours
        else len(random_keys) != 1):
      raise ValueError(f'{len(random_keys)} environments need an adder for as many, got '
                       f'{getattr(adder, "num_environments", type(adder).__name__)}')
    self._adder_takes_packed = (self._adder_is_ours and
                                adder.layout.observation_packer == self._packer)
    # Per environment, the last observation given to its adder, packed: select_actions
    # reads it next.
    self._observed: List[Optional[Tuple[object, packing.Packed]]] = (
        [None] * len(random_keys))

  def __len__(self) -> int:
    return len(self._explorers)

  def sigma(self, index: int) -> float:
    """Environment `index`'s current exploration noise, in half-ranges."""
    return self._explorers[index].sigma

  def select_actions(self, observations: Sequence) -> List[np.ndarray]:
    """One action per environment, for its observation."""
    packed = []
    for index, observation in enumerate(observations):
      observed = self._observed[index]
      packed.append(observed[1] if observed is not None and observed[0] is observation
                    else self._packer.pack(observation))
      self._observed[index] = None
    stacked = tuple(np.stack(parts) for parts in zip(*packed))
    actions = np.asarray(self._policy(self._variable_client.params[0], stacked))
    return [explorer.explore(action)
            for explorer, action in zip(self._explorers, actions)]

  def observe_first(self, index: int, timestep: dm_env.TimeStep) -> None:
    self._explorers[index].start_episode()
    if self._adder_is_ours:
      self._adder.add_first(timestep, packed_observation=self._packed(index, timestep),
                            environment=index)
    elif self._adder:
      self._adder.add_first(timestep)

  def observe(self, index: int, action: np.ndarray,
              next_timestep: dm_env.TimeStep) -> None:
    if self._adder_is_ours:
      self._adder.add(action, next_timestep,
                      packed_observation=self._packed(index, next_timestep),
                      environment=index)
    elif self._adder:
      self._adder.add(action, next_timestep)

  def _packed(self, index: int, timestep: dm_env.TimeStep) -> Optional[packing.Packed]:
    """The timestep's observation packed for the adder, kept for the next
    select_actions; None if the adder packs differently."""
    if not self._adder_takes_packed:
      return None
    packed = self._packer.pack(timestep.observation)
    self._observed[index] = (timestep.observation, packed)
    return packed

  def update(self, wait: bool = False) -> None:
    self._variable_client.update(wait)


class MetaMimicActor(core.Actor):
  """Acts in one environment with a policy whose parameters come from a VariableClient.

  The action is the deterministic policy's plus Gaussian noise of `sigma` half-ranges,
  clipped to the action spec (`sigma=0` gives the evaluation policy). Given
  `min_sigma`, each episode instead explores with a sigma drawn log-uniformly from
  [min_sigma, sigma] when it starts (`observe_first`). The goal (the
  demonstration's next frames) is part of the observation the demo-conditioned
  environment emits, so the same actor serves the imitation policy (which reads it) and
  the task policy (which ignores it). Transitions, carrying both the imitation and the
  task reward, go to replay through an Acme adder. An ActorBatch of one.
  """

  def __init__(self, networks: ActorCriticNetworks,
               environment_spec: specs.EnvironmentSpec, sigma: float,
               random_key: jax.Array, variable_client: jax_utils.VariableClient,
               adder: Optional[acme_adders.Adder] = None, min_sigma: Optional[float] = None):
    self._batch = ActorBatch(networks, environment_spec, sigma, [random_key],
                             variable_client, adder, min_sigma)

  def select_action(self, observation) -> np.ndarray:
    return self._batch.select_actions([observation])[0]

  @property
  def sigma(self) -> float:
    """The current episode's exploration noise, in half-ranges."""
    return self._batch.sigma(0)

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    self._batch.observe_first(0, timestep)

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    self._batch.observe(0, action, next_timestep)

  def update(self, wait: bool = False) -> None:
    self._batch.update(wait)
