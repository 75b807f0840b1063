"""Policies, the MetaMimic actor (an `acme.core.Actor`) and a batch of actors.

Acting is one step at a time, so the policy call's fixed cost dominates: a jitted call
pays per argument leaf. The actor therefore packs the observation into one flat float32
vector on the host (its uint8 images stay separate arrays), the jitted policy unpacks it
with static slices, and the exploration noise is drawn with numpy on the host: one call
takes the parameters and one array (plus any images) and returns the actions. An adder
that stores observations packed the same way gets the packed observations the policy
then reads, so each observation is packed once.

`ActorBatch` acts in several environments with one policy call a step for all of them:
on a CPU the call and its eviction of the simulator's caches cost more than the call's
arithmetic, so a batch pays them once for all its environments. The step's host work
is batched too: all the environments' observations are packed with one concatenate
(`observe_all`), one adder advances all their episodes with whole-array operations, and
the noise is one array operation. Each environment keeps its own exploration, exactly
as one `MetaMimicActor` each would, and one adder writes all their transitions, an item
holding one from each environment.
"""

from typing import Callable, Optional, Sequence, Tuple

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


# Noise an environment draws at once, in steps: a small draw's time is nearly all
# numpy's per-call cost.
NOISE_DRAWS_AT_ONCE = 64


class _Explorer:
  """One environment's exploration: Gaussian noise of `sigma` half-ranges; given
  `min_sigma`, a sigma drawn log-uniformly from [min_sigma, sigma] at each episode's
  start."""

  def __init__(self, action_spec: specs.BoundedArray, sigma: float,
               random_key: jax.Array, min_sigma: Optional[float]):
    self._range = (np.asarray(action_spec.maximum, np.float32) -
                   np.asarray(action_spec.minimum, np.float32))
    self._rng = np.random.default_rng(np.asarray(jax.random.key_data(random_key)))
    self._sigma_range = None if min_sigma is None else (min_sigma, sigma)
    self._shape = tuple(action_spec.shape)
    self._draws = np.empty((0,) + self._shape, np.float32)
    self._next = 0
    self._set_sigma(sigma)

  def _set_sigma(self, sigma: float) -> None:
    self.sigma = sigma
    self.noise_scale = np.float32(sigma * 0.5) * self._range

  def start_episode(self) -> None:
    if self._sigma_range is not None:
      self._set_sigma(float(np.exp(self._rng.uniform(*np.log(self._sigma_range)))))

  def standard_normal(self) -> np.ndarray:
    """The next standard normal draw of the action's shape. Drawn
    `NOISE_DRAWS_AT_ONCE` at a time: the same numbers as a draw a step while no sigma
    is drawn in between."""
    if self._next == len(self._draws):
      self._draws = self._rng.standard_normal((NOISE_DRAWS_AT_ONCE,) + self._shape,
                                              np.float32)
      self._next = 0
    self._next += 1
    return self._draws[self._next - 1]


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
    self._minimum = np.asarray(environment_spec.actions.minimum, np.float32)
    self._maximum = np.asarray(environment_spec.actions.maximum, np.float32)
    # Each environment's sigma and noise scale, as its explorer's (set at episodes'
    # starts).
    self._sigmas = [explorer.sigma for explorer in self._explorers]
    self._noise_scales = np.stack([explorer.noise_scale for explorer in self._explorers])
    # The observations last given to the adder, and them packed: select_actions reads
    # them next.
    self._observed: Optional[Tuple[Sequence, packing.Packed]] = None

  def __len__(self) -> int:
    return len(self._explorers)

  def sigma(self, index: int) -> float:
    """Environment `index`'s current exploration noise, in half-ranges."""
    return self._explorers[index].sigma

  def select_actions(self, observations: Sequence) -> np.ndarray:
    """One action per environment, for its observation: [len(self), ...]."""
    actions = np.asarray(self._policy(self._variable_client.params[0],
                                      self._pack_all(observations)))
    if not any(self._sigmas):
      return actions
    noise = _stack([explorer.standard_normal() for explorer in self._explorers])
    explored = actions + noise * self._noise_scales
    # Clipped to the action spec (np.clip's result, at half its cost on small arrays).
    np.minimum(np.maximum(explored, self._minimum, out=explored), self._maximum,
               out=explored)
    if all(self._sigmas):
      return explored
    # Without noise the policy's action as it is, unclipped.
    noisy = np.array(self._sigmas) > 0
    return np.where(noisy.reshape((-1,) + (1,) * (actions.ndim - 1)), explored, actions)

  def observe_first(self, index: int, timestep: dm_env.TimeStep) -> None:
    explorer = self._explorers[index]
    explorer.start_episode()
    self._sigmas[index], self._noise_scales[index] = explorer.sigma, explorer.noise_scale
    if self._adder_is_ours:
      self._adder.add_first(timestep, environment=index, packed_observation=(
          self._packer.pack(timestep.observation) if self._adder_takes_packed else None))
    elif self._adder:
      self._adder.add_first(timestep)

  def observe_all(self, actions: np.ndarray,
                  next_timesteps: Sequence[dm_env.TimeStep]) -> None:
    """Each environment's action [len(self), ...] and the timestep it led to."""
    if self._adder_is_ours:
      packed = None
      if self._adder_takes_packed:
        observations = [timestep.observation for timestep in next_timesteps]
        packed = self._packer.pack_all(observations)
        self._observed = (observations, packed)
      self._adder.add_all(actions, next_timesteps, packed)
    elif self._adder:
      action, = actions
      next_timestep, = next_timesteps
      self._adder.add(action, next_timestep)

  def _pack_all(self, observations: Sequence) -> packing.Packed:
    """The observations packed and stacked, from what observe_all packed where it
    can."""
    observed, self._observed = self._observed, None
    if observed is None:
      return self._packer.pack_all(observations)
    previous, packed = observed
    stale = [i for i, (observation, seen) in enumerate(zip(observations, previous))
             if observation is not seen]  # Reset since.
    if stale:
      packed = tuple(np.array(part) for part in packed)  # The adder may still hold them.
      for i in stale:
        for part, row in zip(packed, self._packer.pack(observations[i])):
          part[i] = row
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
    self._batch.observe_all(np.asarray(action)[None], [next_timestep])

  def update(self, wait: bool = False) -> None:
    self._batch.update(wait)


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
  """np.stack, without its checks for one array (a third of its time)."""
  return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
