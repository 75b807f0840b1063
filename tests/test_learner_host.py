"""launchpad_programs/learner_host.py: two learner processes on localhost, one Reverb."""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Tuple

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


class _Host:
  """A learner_host.py process whose output goes to a file: the processes of a job
  wait on each other, so a pipe read after another's could block the job."""

  def __init__(self, command, output_path):
    self.output_path = output_path
    with open(output_path, 'w') as output:
      self.process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=output,
                                      stderr=subprocess.STDOUT)

  def output(self) -> str:
    with open(self.output_path) as f:
      return f.read()

  def finish(self, timeout=TIMEOUT_S) -> Tuple[int, str]:
    """(return code, output) once the process exits."""
    return self.process.wait(timeout), self.output()

  def wait_for_line(self, prefix: str, timeout=TIMEOUT_S) -> None:
    deadline = time.time() + timeout
    while not any(l.startswith(prefix) for l in self.output().splitlines()):
      assert self.process.poll() is None, self.output()[-3000:]
      assert time.time() < deadline, f'no line {prefix!r}: {self.output()[-3000:]}'
      time.sleep(0.2)


def _launch(replay_address, demo_dir, workdirs, max_steps, variable_port, output_dir,
            keep_serving=False, demo_dirs=None) -> List[_Host]:
  """One learner_host.py per workdir: process i writes to workdirs[i], reads
  demo_dirs[i] (default: demo_dir), and prints to output_dir/process_<i>.txt; no
  max_steps: until stopped."""
  coordinator = f'localhost:{_free_port()}'
  demo_dirs = demo_dirs or [demo_dir] * len(workdirs)
  return [_Host(
      [sys.executable, PROGRAM, f'--coordinator_address={coordinator}',
       '--num_processes=2', f'--process_id={i}', f'--replay_address={replay_address}',
       f'--workdir={workdir}', f'--demo_dir={demo_dirs[i]}',
       *([] if max_steps is None else [f'--max_learner_steps={max_steps}']),
       f'--variable_port={variable_port}', f'--keep_serving={keep_serving}',
       *AGENT_FLAGS],
      os.path.join(output_dir, f'process_{i}.txt')) for i, workdir in enumerate(workdirs)]


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
  hosts = _launch(replay_address, demo_dir, workdirs, 2, port, tmp_path,
                  keep_serving=True)
  try:
    returncode, output_1 = hosts[1].finish()
    assert returncode == 0, output_1[-3000:]
    hosts[0].wait_for_line('serving the final variables')
    import courier  # pylint: disable=g-import-not-at-top
    served, = courier.Client(f'localhost:{port}').get_variables(
        [MetaMimicLearner.IMITATION_POLICY])
    hosts[0].process.send_signal(signal.SIGTERM)
    returncode, output_0 = hosts[0].finish()
    assert returncode == 0, output_0[-3000:]

    assert f'starts at step 0; variables served at ' in output_0
    assert _finished(output_0) == _finished(output_1)
    step, digest = _finished(output_0)
    state = _checkpointed_state(workdirs[0], spec)
    assert (step, int(state.steps)) == (2, 2)
    assert learner_host.state_digest(state) == digest
    jax.tree.map(np.testing.assert_array_equal, served, state.imitation.policy_params)
    assert os.path.getsize(os.path.join(workdirs[0], 'logs', 'learner', 'logs.csv'))
    assert not os.path.exists(workdirs[1])  # Process 1 wrote nothing.

    (tmp_path / 'resumed').mkdir()
    hosts += _launch(replay_address, demo_dir, workdirs, 4, port, tmp_path / 'resumed')
    outputs = []
    for host in hosts[2:]:
      returncode, output = host.finish()
      assert returncode == 0, output[-3000:]
      outputs.append(output)
  finally:
    for host in hosts:
      host.process.kill()
  assert 'starts at step 2; ' in outputs[0]
  assert _finished(outputs[0]) == _finished(outputs[1])
  step, digest = _finished(outputs[0])
  state = _checkpointed_state(workdirs[0], spec)
  assert (step, int(state.steps)) == (4, 4)
  assert learner_host.state_digest(state) == digest
  assert not os.path.exists(workdirs[1])


@pytest.mark.slow
def test_sigterm_to_one_host_stops_every_host_after_the_same_step(replay, tmp_path):
  demo_dir, spec, replay_address = replay
  workdirs = [str(tmp_path / f'host_{i}') for i in range(2)]
  hosts = _launch(replay_address, demo_dir, workdirs, None, _free_port(), tmp_path)
  try:
    hosts[0].wait_for_line('learner process 0 of 2 starts at step 0')
    time.sleep(10)  # Training: the job runs until stopped.
    hosts[1].process.send_signal(signal.SIGTERM)  # A scheduler stopping one host.
    (returncode_0, output_0), (returncode_1, output_1) = (h.finish() for h in hosts)
  finally:
    for host in hosts:
      host.process.kill()
  assert (returncode_0, returncode_1) == (0, 0), output_0[-3000:] + output_1[-3000:]
  step, digest = _finished(output_0)
  assert _finished(output_1) == (step, digest) and step > 0
  assert f'learner process 1: stopping at step {step} (SIGTERM or Ctrl-C to process(es) ' \
         '[1])' in output_1
  state = _checkpointed_state(workdirs[0], spec)  # Process 0 checkpointed that step.
  assert int(state.steps) == step and learner_host.state_digest(state) == digest


@pytest.mark.slow  # Two processes join the job: about 40 s here.
def test_when_one_host_cannot_start_every_host_stops_with_one_line(replay, tmp_path):
  demo_dir, _, replay_address = replay
  hosts = _launch(replay_address, demo_dir, [str(tmp_path / 'host_0')] * 2, 2,
                  _free_port(), tmp_path, demo_dirs=[demo_dir, str(tmp_path / 'none')])
  returncodes, outputs = zip(*(host.finish() for host in hosts))
  errors = [[l for l in output.splitlines() if l.startswith('error: ')]
            for output in outputs]
  assert list(returncodes) == [1, 1], outputs
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
