"""Policies and the MetaMimic actor (an `acme.core.Actor`).

Acting is one step at a time, so the policy call's fixed cost dominates: a jitted call
pays per argument leaf. The actor therefore packs the observation into one flat float32
vector on the host (its uint8 images stay separate arrays), the jitted policy unpacks it
with static slices, and the exploration noise is drawn with numpy on the host: one call
takes the parameters and one array (plus any images) and returns one action. An adder
that stores observations packed the same way gets the packed observation the policy
then reads, so each observation is packed once.
"""

from typing import Callable, Optional, Tuple

from acme import adders
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

# policy(params, packed observation) -> unbatched deterministic action.
Policy = Callable[[object, packing.Packed], jnp.ndarray]


def make_policy(networks: ActorCriticNetworks, packer: packing.ObservationPacker
                ) -> Policy:
  """The deterministic policy on one packed observation, jitted."""

  def policy(params, packed):
    batched = packer.unpack(tuple(x[None] for x in packed))
    return networks.policy.apply(params, batched)[0]

  return jax.jit(policy)


class MetaMimicActor(core.Actor):
  """Acts with a policy whose parameters come from a VariableClient.

  The action is the deterministic policy's plus Gaussian noise of `sigma` half-ranges,
  clipped to the action spec (`sigma=0` gives the evaluation policy). Given
  `min_sigma`, each episode instead explores with a sigma drawn log-uniformly from
  [min_sigma, sigma] when it starts (`observe_first`). The goal (the
  demonstration's next frames) is part of the observation the demo-conditioned
  environment emits, so the same actor serves the imitation policy (which reads it) and
  the task policy (which ignores it). Transitions, carrying both the imitation and the
  task reward, go to replay through an Acme adder.
  """

  def __init__(self, networks: ActorCriticNetworks,
               environment_spec: specs.EnvironmentSpec, sigma: float,
               random_key: jax.Array, variable_client: jax_utils.VariableClient,
               adder: adders.Adder = None, min_sigma: Optional[float] = None):
    self._packer = packing.ObservationPacker(environment_spec.observations)
    self._policy = make_policy(networks, self._packer)
    action_spec = environment_spec.actions
    self._minimum = np.asarray(action_spec.minimum, np.float32)
    self._maximum = np.asarray(action_spec.maximum, np.float32)
    self._rng = np.random.default_rng(np.asarray(jax.random.key_data(random_key)))
    self._sigma_range = None if min_sigma is None else (min_sigma, sigma)
    self._set_sigma(sigma)
    self._variable_client = variable_client
    self._adder = adder
    self._adder_takes_packed = (isinstance(adder, adders_lib.NStepTransitionAdder) and
                                adder.layout.observation_packer == self._packer)
    # The last observation given to the adder, packed: select_action reads it next.
    self._observed: Optional[Tuple[object, packing.Packed]] = None

  def select_action(self, observation) -> np.ndarray:
    if self._observed is not None and self._observed[0] is observation:
      packed = self._observed[1]
    else:
      packed = self._packer.pack(observation)
    self._observed = None
    action = np.asarray(self._policy(self._variable_client.params[0], packed))
    if self._sigma > 0:
      noise = self._rng.standard_normal(action.shape, np.float32) * self._noise_scale
      action = np.clip(action + noise, self._minimum, self._maximum)
    return action

  @property
  def sigma(self) -> float:
    """The current episode's exploration noise, in half-ranges."""
    return self._sigma

  def _set_sigma(self, sigma: float) -> None:
    self._sigma = sigma
    self._noise_scale = np.float32(sigma * 0.5) * (self._maximum - self._minimum)

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    if self._sigma_range is not None:
      self._set_sigma(float(np.exp(self._rng.uniform(*np.log(self._sigma_range)))))
    if self._adder_takes_packed:
      self._adder.add_first(timestep, packed_observation=self._pack(timestep))
    elif self._adder:
      self._adder.add_first(timestep)

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    if self._adder_takes_packed:
      self._adder.add(action, next_timestep, packed_observation=self._pack(next_timestep))
    elif self._adder:
      self._adder.add(action, next_timestep)

  def _pack(self, timestep: dm_env.TimeStep) -> packing.Packed:
    """Packs the timestep's observation and keeps it for the next select_action."""
    packed = self._packer.pack(timestep.observation)
    self._observed = (timestep.observation, packed)
    return packed

  def update(self, wait: bool = False) -> None:
    self._variable_client.update(wait)
