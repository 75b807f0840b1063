"""Numerical health: a non-finite loss or parameter stops the learner, naming it."""

import os
import subprocess
import sys

from acme import types
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metamimic_jax import jax_utils
from metamimic_jax import numerics
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batches(spec, poison=None):
  """Endless two-device batches of 8; `poison` puts a NaN in the imitation reward or
  an inf in the goal."""
  rng = np.random.default_rng(0)
  sample = lambda s: rng.uniform(-0.3, 0.3, (8,) + s.shape).astype(s.dtype)
  ones = np.ones(8, np.float32)
  observation = jax.tree.map(sample, spec.observations)
  if poison == 'goal':
    jax.tree.leaves(observation['goal'])[0][3] = np.inf
  batch = types.Transition(
      observation=observation, action=sample(spec.actions),
      reward={'imitation': np.full(8, np.nan if poison == 'reward' else 0.5, np.float32),
              'task': ones},
      discount={'imitation': ones, 'task': ones},
      next_observation=jax.tree.map(sample, spec.observations))
  sharded = jax.tree.map(lambda x: jax.device_put_sharded(list(x), jax.local_devices()),
                         jax_utils.shard(batch, 2))
  return iter(lambda: sharded, None)


def test_all_finite_looks_at_every_floating_leaf():
  tree = {'a': jnp.ones(3), 'b': (jnp.zeros((2, 2)), jnp.arange(3))}
  assert bool(numerics.all_finite(tree))
  for bad in (np.nan, np.inf, -np.inf):
    assert not bool(numerics.all_finite({**tree, 'c': jnp.array([0.0, bad])}))


@pytest.mark.parametrize('poison', ['reward', 'goal'])
def test_learner_stops_naming_step_and_metric_and_keeps_its_state(poison):
  builder, _, spec = helpers.point_mass_setup(num_demos=1)
  networks = builder.make_networks(spec)
  learner = builder.make_learner(jax.random.PRNGKey(0), networks, _batches(spec),
                                 spec)
  learner.step()  # A finite step goes through.
  good = learner.save()
  learner._iterator = _batches(spec, poison)  # pylint: disable=protected-access
  with pytest.raises(numerics.NonFiniteError,
                     match=r'^learner step 2: imitation/critic_loss = nan.*'
                           r'imitation/critic_params \(non-finite values\)') as error:
    learner.step()
  assert 'task/' not in str(error.value)  # The task agent's reward was finite.
  # The bad update is not kept: the learner (and so any checkpoint) holds step 1.
  jax.tree.map(np.testing.assert_array_equal, learner.save(), good)


@pytest.mark.slow  # Records demos, compiles and trains in a subprocess (about a minute).
def test_train_script_stops_with_one_line_when_learning_diverges(tmp_path):
  # Adam moves every parameter by about the learning rate each step: at 1e30 the
  # critic's outputs overflow float32 within a few steps.
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'train.py'),
       f'--workdir={tmp_path}', '--num_demos=4', '--learning_rate=1e30',
       '--batch_size=8', '--min_replay_size=10', '--policy_layers=8',
       '--critic_layers=8', '--max_env_steps=2000', '--eval_every_env_steps=1000'],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and errors[0].startswith('error: learner step '), errors
  assert 'nan' in errors[0] and 'the last checkpoint stays as it was' in errors[0]
  assert 'Traceback' not in result.stderr
