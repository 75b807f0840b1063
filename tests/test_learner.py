"""The Acme learner around the pure step (the step itself: tests/core/test_learning.py)."""

from acme import types
import jax
import numpy as np
import pytest

from metamimic_jax import jax_utils
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from tests import helpers
from tests.core import synthetic


def test_core_transition_has_acmes_fields_and_acme_batches_step_alike():
  assert learning.Transition._fields == types.Transition._fields
  _, _, spec = helpers.point_mass_setup()
  config = helpers.TINY_CONFIG
  networks = networks_lib.make_networks(spec, config)
  dummy_observation, dummy_action = networks_lib.dummy_inputs(spec)
  state = learning.init_training_state(jax.random.PRNGKey(0), networks,
                                       dummy_observation, dummy_action, config)
  batch = synthetic.random_batch(spec, 8)
  step = jax.jit(learning.make_sgd_step(networks, config))
  core_state, _ = step(state, batch)
  acme_state, _ = step(state, types.Transition(*batch))
  jax.tree.map(np.testing.assert_array_equal, core_state, acme_state)


def test_learner_serves_variables_and_restores():
  builder, _, spec = helpers.point_mass_setup()
  networks = builder.make_networks(spec)
  batches = iter(lambda: jax_utils.put_sharded(
      jax_utils.shard(synthetic.random_batch(spec, 8), 2), jax.local_devices()), None)
  learner = builder.make_learner(jax.random.PRNGKey(0), networks, batches, spec)
  saved = learner.save()
  learner.step()
  stepped = learner.save()
  assert int(stepped.steps) == 1
  policy, = learner.get_variables([learner.IMITATION_POLICY])
  jax.tree.map(np.testing.assert_array_equal, policy, stepped.imitation.policy_params)
  learner.restore(saved)
  jax.tree.map(np.testing.assert_array_equal, learner.save(), saved)
  with pytest.raises(KeyError):
    learner.get_variables(['no_such_policy'])
