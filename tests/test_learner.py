"""The Acme learner around the pure step (the step itself: tests/core/test_learning.py)."""

import os
import socket
import subprocess
import sys

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


@pytest.mark.slow  # Two learner processes import Acme and compile the step: ~1-2 min.
def test_two_learner_processes_step_as_one_and_only_process_0_counts(tmp_path):
  """Each process starts from its own seed, and process 1 restores a stale state before
  the last step: both must end with process 0's seed's state after 3 steps on the
  whole batches, as one process computes it."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    address = f'localhost:{s.getsockname()[1]}'
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=os.pathsep.join([root, os.environ.get('PYTHONPATH', '')]))
  outs = [tmp_path / f'process_{i}.npz' for i in range(2)]
  workers = [subprocess.Popen(
      [sys.executable, '-m', 'tests.learner_multihost_worker', address, str(i),
       str(out)], cwd=root, env=env, stderr=subprocess.PIPE, text=True)
             for i, out in enumerate(outs)]
  try:
    for worker in workers:
      _, stderr = worker.communicate(timeout=400)
      assert worker.returncode == 0, stderr[-3000:]
  finally:
    for worker in workers:
      worker.kill()

  config = synthetic.TINY_CONFIG
  spec = synthetic.point_mass_spec()
  networks = networks_lib.make_networks(spec, config)
  state = learning.init_training_state(jax.random.PRNGKey(0), networks,
                                       *networks_lib.dummy_inputs(spec), config)
  step = jax.jit(learning.make_sgd_step(networks, config))
  for i in range(3):
    state, _ = step(state, synthetic.random_batch(spec, config.batch_size, seed=i))
  expected = jax.tree.leaves(state)
  results = [np.load(out) for out in outs]
  for result in results:
    got = [result[f'arr_{j}'] for j in range(len(expected))]
    # Float32 reduction-order noise through 3 Adam steps (see
    # tests/core/test_multihost.py).
    for a, b in zip(got, expected):
      np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)
  for j in range(len(expected)):
    np.testing.assert_array_equal(results[0][f'arr_{j}'], results[1][f'arr_{j}'])
  assert (int(results[0]['steps']), int(results[0]['log_rows'])) == (3, 3)
  assert (int(results[1]['steps']), int(results[1]['log_rows'])) == (0, 0)
