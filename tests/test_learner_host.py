"""launchpad_programs/learner_host.py: two learner processes on localhost, one Reverb."""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
import reverb
from acme import specs

from metamimic_jax import checkpointing
from metamimic_jax import demo_sets
from metamimic_jax import learner_host
from metamimic_jax import learning
from metamimic_jax import networks as networks_lib
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import PRESETS
from metamimic_jax.environments import make_domain
from metamimic_jax.learner import MetaMimicLearner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, 'launchpad_programs', 'learner_host.py')
# A tiny agent, as flags and as the config they make.
AGENT_FLAGS = ['--batch_size=8', '--min_replay_size=10', '--policy_layers=16,16',
               '--critic_layers=16,16', '--n_step=3']
CONFIG = dataclasses.replace(PRESETS['paper'], batch_size=8, min_replay_size=10,
                             policy_layer_sizes=(16, 16), critic_layer_sizes=(16, 16),
                             n_step=3)
TIMEOUT_S = 400


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS='--xla_force_host_platform_device_count=2',
              PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))


class _Holder:
  """A Saveable holding a learner state, to read a checkpoint into."""

  def __init__(self, state):
    self.state = state

  def save(self):
    return self.state

  def restore(self, state):
    self.state = state


def _checkpointed_state(workdir: str, spec):
  networks = networks_lib.make_networks(spec, CONFIG)
  holder = _Holder(learning.init_training_state(
      jax.random.PRNGKey(0), networks, *networks_lib.dummy_inputs(spec), CONFIG))
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, learner_host.CHECKPOINT_DIRECTORY), {'learner': holder},
      checkpointing.fingerprint('point_mass', CONFIG))
  assert checkpointer.restore()
  return holder.state


@pytest.fixture(scope='module')
def replay(tmp_path_factory):
  """(demo dir, spec, replay address): a Reverb server with the program's table, and an
  actor thread writing random-action transitions through the builder's adder as fast
  as the table's rate limiter lets it (as the learners sample)."""
  demo_dir = str(tmp_path_factory.mktemp('demos'))
  domain = make_domain('point_mass')
  train = demo_sets.generate(domain, demo_dir, range(3), held_out_fraction=0.34,
                             successful_only=False).train
  builder = MetaMimicBuilder(CONFIG, domain)
  environment = builder.make_demo_environment(train, seed=0)
  spec = specs.make_environment_spec(environment)
  server = reverb.Server(builder.make_replay_tables(spec), port=None)
  address = f'localhost:{server.port}'
  stop = threading.Event()

  def act():
    adder = builder.make_adder(reverb.Client(address), spec)
    rng = np.random.default_rng(0)
    timestep = environment.reset()
    adder.add_first(timestep)
    while not stop.is_set():
      action = rng.uniform(-1, 1, spec.actions.shape).astype(np.float32)
      timestep = environment.step(action)
      adder.add(action, timestep)
      if timestep.last():
        timestep = environment.reset()
        adder.add_first(timestep)

  threading.Thread(target=act, daemon=True).start()
  yield demo_dir, spec, address
  stop.set()
  server.stop()


def _launch(replay_address, demo_dir, workdirs, max_steps, variable_port,
            keep_serving=False, demo_dirs=None):
  """One learner_host.py per workdir: process i writes to workdirs[i], reads
  demo_dirs[i] (default: demo_dir)."""
  coordinator = f'localhost:{_free_port()}'
  demo_dirs = demo_dirs or [demo_dir] * len(workdirs)
  return [subprocess.Popen(
      [sys.executable, PROGRAM, f'--coordinator_address={coordinator}',
       '--num_processes=2', f'--process_id={i}', f'--replay_address={replay_address}',
       f'--workdir={workdir}', f'--demo_dir={demo_dirs[i]}',
       f'--max_learner_steps={max_steps}', f'--variable_port={variable_port}',
       f'--keep_serving={keep_serving}', *AGENT_FLAGS],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i, workdir in enumerate(workdirs)]


def _finished(output: str):
  """(step, digest) of the 'finished at step N; state digest D' line."""
  line = next(l for l in output.splitlines() if ' finished at step ' in l)
  step, digest = line.split(' finished at step ')[1].split('; state digest ')
  return int(step), digest


@pytest.mark.slow
def test_two_learner_hosts_agree_serve_checkpoint_and_resume(replay, tmp_path):
  demo_dir, spec, replay_address = replay
  workdirs = [str(tmp_path / f'host_{i}') for i in range(2)]
  port = _free_port()
  processes = _launch(replay_address, demo_dir, workdirs, 2, port, keep_serving=True)
  killer = threading.Timer(TIMEOUT_S, lambda: [p.kill() for p in processes])
  killer.start()
  try:
    output_1 = processes[1].communicate()[0]
    assert processes[1].returncode == 0, output_1[-3000:]
    output_0 = ''
    for line in processes[0].stdout:  # Until process 0 serves its final variables.
      output_0 += line
      if line.startswith('serving the final variables'):
        break
    import courier  # pylint: disable=g-import-not-at-top
    served, = courier.Client(f'localhost:{port}').get_variables(
        [MetaMimicLearner.IMITATION_POLICY])
    processes[0].send_signal(signal.SIGTERM)
    output_0 += processes[0].communicate()[0]
    assert processes[0].returncode == 0, output_0[-3000:]

    assert f'starts at step 0; variables served at ' in output_0
    assert _finished(output_0) == _finished(output_1)
    step, digest = _finished(output_0)
    state = _checkpointed_state(workdirs[0], spec)
    assert (step, int(state.steps)) == (2, 2)
    assert learner_host.state_digest(state) == digest
    jax.tree.map(np.testing.assert_array_equal, served, state.imitation.policy_params)
    assert os.path.getsize(os.path.join(workdirs[0], 'logs', 'learner', 'logs.csv'))
    assert not os.path.exists(workdirs[1])  # Process 1 wrote nothing.

    processes[:] = _launch(replay_address, demo_dir, workdirs, 4, port)
    outputs = [p.communicate()[0] for p in processes]
    for p, output in zip(processes, outputs):
      assert p.returncode == 0, output[-3000:]
  finally:
    killer.cancel()
    for p in processes:
      p.kill()
  assert 'starts at step 2; ' in outputs[0]
  assert _finished(outputs[0]) == _finished(outputs[1])
  step, digest = _finished(outputs[0])
  state = _checkpointed_state(workdirs[0], spec)
  assert (step, int(state.steps)) == (4, 4)
  assert learner_host.state_digest(state) == digest
  assert not os.path.exists(workdirs[1])


@pytest.mark.slow  # Two processes join the job: about 40 s here.
def test_when_one_host_cannot_start_every_host_stops_with_one_line(replay, tmp_path):
  demo_dir, _, replay_address = replay
  processes = _launch(replay_address, demo_dir, [str(tmp_path / 'host_0')] * 2, 2,
                      _free_port(), demo_dirs=[demo_dir, str(tmp_path / 'none')])
  outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in processes]
  errors = [[l for l in output.splitlines() if l.startswith('error: ')]
            for output in outputs]
  assert [p.returncode for p in processes] == [1, 1], outputs
  assert 'Traceback' not in outputs[0] + outputs[1]
  assert errors == [
      ['error: learner process(es) [1] of the job could not start (their output says '
       'why)'],
      [f'error: {tmp_path}/none/train.h5: no such demonstration file']], outputs


@pytest.mark.parametrize('flags, message', [
    (['--num_processes=2', '--process_id=2'],
     'error: process_id 2 is out of range for 2 processes (0 to 1)'),
    (['--demo_dir=/nonexistent'], 'error: /nonexistent/train.h5'),
])
def test_bad_input_gives_one_line(flags, message, tmp_path):
  result = subprocess.run(
      [sys.executable, PROGRAM, '--replay_address=localhost:1',
       f'--workdir={tmp_path}', *flags], cwd=ROOT, env=_env(), capture_output=True,
      text=True, timeout=120)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-3000:]
