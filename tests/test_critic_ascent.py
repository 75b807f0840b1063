"""Acting by gradient ascent on a critic: hand-computed ascents, the actor, the benchmark."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metamimic_jax import critic_ascent
from metamimic_jax import losses
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOW, HIGH = -jnp.ones(2), jnp.ones(2)


def _towards(target):
  return lambda a: -jnp.sum((a - jnp.asarray(target)) ** 2)


def test_ascent_takes_steps_of_the_given_length_along_the_gradient():
  best, best_q = critic_ascent.ascend(_towards([1.0, 0.0]), jnp.zeros(2), LOW, HIGH,
                                      step_size=0.1, num_steps=5)
  np.testing.assert_allclose(best, [0.5, 0.0], atol=1e-6)
  assert best_q == pytest.approx(-0.25, abs=1e-6)


def test_ascent_stays_within_the_action_bounds():
  # Steps of 0.3 towards x = 2: 0.3, 0.6, 0.9, then clipped at the bound 1.
  best, _ = critic_ascent.ascend(_towards([2.0, 0.0]), jnp.zeros(2), LOW, HIGH,
                                 step_size=0.3, num_steps=5)
  np.testing.assert_allclose(best, [1.0, 0.0], atol=1e-6)


def test_ascent_keeps_the_start_when_every_step_overshoots():
  # The optimum is 0.05 away; steps of 0.5 land 0.45 beyond it, then back at 0.
  start = jnp.array([0.0, 0.0])
  best, best_q = critic_ascent.ascend(_towards([0.05, 0.0]), start, LOW, HIGH,
                                      step_size=0.5, num_steps=4)
  np.testing.assert_allclose(best, start)
  assert best_q == pytest.approx(-0.0025, abs=1e-7)


@pytest.fixture(scope='module')
def trained():
  """A freshly initialised point-mass learner's imitation networks and state, and its
  environment and spec."""
  builder, environment, spec = helpers.point_mass_setup()
  networks = builder.make_networks(spec)
  learner = builder.make_learner(jax.random.PRNGKey(0), networks, iter(()), spec)
  return networks.imitation, learner.save().imitation, environment, spec


def test_step_size_zero_is_the_policy_and_records_the_penalty_balance(trained):
  networks, state, environment, spec = trained
  actor = critic_ascent.CriticAscentActor(networks, state.policy_params,
                                          state.critic_params, spec, step_size=0.0,
                                          num_steps=3, preactivation_penalty=0.5)
  observation = environment.reset().observation
  batched = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], observation)
  np.testing.assert_allclose(actor.select_action(observation),
                             networks.policy.apply(state.policy_params, batched)[0],
                             atol=1e-6)
  record = actor.records[-1]
  assert record.move == 0.0 and record.q_gain == 0.0
  u = networks.policy_preactivation.apply(state.policy_params, batched)[0]
  assert record.penalty_gradient_norm == pytest.approx(
      float(jnp.linalg.norm(2 * 0.5 * u)), rel=1e-5)
  q = lambda u: losses.mean_value(networks.critic.apply(
      state.critic_params, batched, networks.squash(u[None])), networks.atoms)[0]
  assert record.dq_du_norm == pytest.approx(float(jnp.linalg.norm(jax.grad(q)(u))),
                                            rel=1e-4)


def test_refined_actions_never_lower_q_and_move_at_most_the_steps_taken(trained):
  networks, state, environment, spec = trained
  actor = critic_ascent.CriticAscentActor(networks, state.policy_params,
                                          state.critic_params, spec, step_size=0.2,
                                          num_steps=3, preactivation_penalty=0.0)
  timestep = environment.reset()
  while not timestep.last():
    action = actor.select_action(timestep.observation)
    assert np.all(action >= spec.actions.minimum) and np.all(action <= spec.actions.maximum)
    timestep = environment.step(action)
  records = np.array(actor.records)
  assert np.all(records[:, 1] >= 0)  # Q gain.
  assert np.all(records[:, 0] <= 3 * 0.2 + 1e-5)  # Move.
  assert np.mean(records[:, 0] > 0) > 0.5  # An untrained critic has a gradient to follow.


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  helpers.tiny_point_mass_run(workdir, demo_frames=10)
  return workdir


def _benchmark(*args):
  return subprocess.run([sys.executable, 'benchmarks/critic_ascent.py', *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_benchmark_reports_every_actor_on_a_saved_run(run_dir):
  result = _benchmark(f'--workdir={run_dir}', f'--demos={run_dir}/demos/held_out.h5',
                      '--step_sizes=0.05,0.2', '--ascent_steps=2')
  assert result.returncode == 0, result.stderr[-2000:]
  rows = {line.split('|')[1].strip(): line for line in result.stdout.splitlines()
          if line.startswith('| ') and not line.startswith(('| actor', '| ---'))}
  assert list(rows) == ['stationary (zero action)', 'policy', 'policy + ascent, step 0.05',
                        'policy + ascent, step 0.2']
  assert 'best refinement: policy + ascent, step' in result.stdout
  assert 'position ' in result.stdout and 'bias share' in result.stdout


def test_benchmark_bad_input_is_one_line(tmp_path):
  result = _benchmark(f'--workdir={tmp_path}', f'--demos={tmp_path}/held_out.h5')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'no checkpoint' in result.stderr and 'Traceback' not in result.stderr
  result = _benchmark(f'--workdir={tmp_path}', f'--demos={tmp_path}/held_out.h5',
                      '--step_sizes=0.1,-1')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert '--step_sizes must be positive numbers' in result.stderr
