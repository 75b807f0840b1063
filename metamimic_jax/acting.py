"""Policies and the MetaMimic actor (an `acme.core.Actor`)."""

from typing import Callable, Optional

from acme import adders
from acme import core
from acme import specs
import dm_env
import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax import jax_utils
from metamimic_jax.networks import ActorCriticNetworks

# policy(params, key, batched observation) -> batched action.
Policy = Callable[[object, jax.Array, object], jnp.ndarray]


def make_policy(networks: ActorCriticNetworks, action_spec: specs.BoundedArray,
                sigma: float) -> Policy:
  """The deterministic policy plus Gaussian noise of `sigma` half-ranges, clipped.

  `sigma=0` gives the evaluation policy.
  """
  minimum = jnp.asarray(action_spec.minimum, jnp.float32)
  maximum = jnp.asarray(action_spec.maximum, jnp.float32)

  def policy(params, key, observation):
    action = networks.policy.apply(params, observation)
    if sigma > 0:
      noise = jax.random.normal(key, action.shape) * sigma * 0.5 * (maximum - minimum)
      action = jnp.clip(action + noise, minimum, maximum)
    return action

  return policy


class MetaMimicActor(core.Actor):
  """Acts with a policy whose parameters come from a VariableClient.

  The goal (the demonstration's next frames) is part of the observation the
  demo-conditioned environment emits, so the same actor serves the imitation policy
  (which reads it) and the task policy (which ignores it). Transitions, carrying both
  the imitation and the task reward, go to replay through an Acme adder.
  """

  def __init__(self, policy: Policy, random_key: jax.Array,
               variable_client: jax_utils.VariableClient,
               adder: Optional[adders.Adder] = None):
    def act(params, key, observation):
      """One unbatched observation in, one action out: batching stays on the device."""
      key, policy_key = jax.random.split(key)
      batch = jax.tree.map(lambda x: x[None], observation)
      return policy(params, policy_key, batch)[0], key

    self._act = jax.jit(act)
    self._key = random_key
    self._variable_client = variable_client
    self._adder = adder

  def select_action(self, observation) -> np.ndarray:
    action, self._key = self._act(self._variable_client.params[0], self._key,
                                  observation)
    return np.asarray(action)

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    if self._adder:
      self._adder.add_first(timestep)

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    if self._adder:
      self._adder.add(action, next_timestep)

  def update(self, wait: bool = False) -> None:
    self._variable_client.update(wait)
