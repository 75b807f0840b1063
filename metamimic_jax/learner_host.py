"""One host's learner process of a pod job (launchpad_programs/learner_host.py).

Every process joins the job, builds its learner and dataset through the builder and
samples its share of each batch from a Reverb server that actors fill; process 0 alone
restores and writes checkpoints (`<workdir>/checkpoints/learner`, the Launchpad
program's layout, so evaluate.py reads them), logs, and serves `get_variables` to
actors and evaluators on a Courier server.
"""

import dataclasses
import hashlib
import os
import signal
import threading
from typing import List, Optional, Sequence

from acme import specs
from acme.utils import counting
import courier
import jax
import numpy as np
import reverb

from metamimic_jax import checkpointing
from metamimic_jax import demo_sets
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import loggers
from metamimic_jax import multihost
from metamimic_jax import storage
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import make_domain
from metamimic_jax.environments.base import Domain
from metamimic_jax.learner import MetaMimicLearner

CHECKPOINT_DIRECTORY = os.path.join('checkpoints', 'learner')
_REPLAY_TIMEOUT_S = 30
# Learner calls between the processes' checks whether one of them was asked to stop.
_STOP_CHECK_CALLS = 10


@dataclasses.dataclass(frozen=True)
class LearnerHostSettings:
  """What a learner process runs, beside the agent's config and its place in the job."""
  replay_address: str  # host:port of the Reverb server the actors fill.
  domain: str = 'point_mass'
  workdir: str = 'runs/learner_host'  # Process 0's checkpoints and logs.
  demo_dir: str = 'runs/learner_host/demos'  # train.h5 gives the environment's spec.
  variable_port: int = 0  # Process 0's Courier server (0: any free port).
  max_learner_steps: Optional[int] = None  # None: until stopped.
  keep_serving: bool = False  # After the last step, serve until SIGTERM or SIGINT.
  checkpoint_minutes: float = 5.0
  seed: int = 0


class StartError(RuntimeError):
  """This process (or another of the job) cannot start; the message says why."""


def state_digest(state) -> str:
  """SHA-256 of every leaf of a learner state: equal on every process of a job."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _check_replay(address: str, builder: MetaMimicBuilder,
                  spec: specs.EnvironmentSpec) -> None:
  """StartError unless `address` serves the builder's table with its signature."""
  table = builder.make_replay_tables(spec)[0]
  try:
    tables = reverb.Client(address).server_info(timeout=_REPLAY_TIMEOUT_S)
  except (RuntimeError, reverb.errors.DeadlineExceededError) as e:
    raise StartError(f'no Reverb server answers at {address} within '
                     f'{_REPLAY_TIMEOUT_S} s ({str(e).splitlines()[0]})') from e
  if table.name not in tables:
    raise StartError(f'the Reverb server at {address} has no table {table.name!r} '
                     f'(it has {sorted(tables)})')
  if tables[table.name].signature != table.info.signature:
    raise StartError(f'the Reverb server at {address} holds transitions of another '
                     'domain or config than this learner\'s (table signatures differ)')


def _prepare(settings: LearnerHostSettings, domain: Domain, builder: MetaMimicBuilder,
             fingerprint, is_chief: bool) -> specs.EnvironmentSpec:
  """The environment spec, after checking demonstrations, replay and (process 0) the
  workdir and its checkpoints; StartError, with one line, if any is wrong."""
  try:
    train_demos, _ = demo_sets.load(domain, settings.demo_dir)
    spec = specs.make_environment_spec(builder.make_demo_environment(train_demos[:1], 0))
    if is_chief:
      storage.check_writable(settings.workdir)
      checkpointing.check_directory(
          os.path.join(settings.workdir, CHECKPOINT_DIRECTORY), fingerprint)
  except (OSError, demos_lib.DemonstrationError, checkpointing.CheckpointError) as e:
    raise StartError(str(e)) from e
  _check_replay(settings.replay_address, builder, spec)
  return spec


def run(settings: LearnerHostSettings, processes: multihost.ProcessSettings,
        config: MetaMimicConfig) -> int:
  """Joins the job, resumes from process 0's checkpoint, steps to max_learner_steps or
  until any process gets SIGTERM or Ctrl-C (then all stop after the same step, process 0
  checkpoints it); returns the final step. Raises StartError (every process, before any step) or
  NonFiniteError."""
  multihost.initialize(processes)
  is_chief = processes.process_id == 0
  domain = make_domain(settings.domain)
  builder = MetaMimicBuilder(config, domain)
  fingerprint = checkpointing.fingerprint(settings.domain, config)
  try:
    spec = _prepare(settings, domain, builder, fingerprint, is_chief)
  except StartError:
    multihost.flagged_processes(True)
    raise
  failed = multihost.flagged_processes(False)
  if failed:
    raise StartError(f'learner process(es) {failed} of the job could not start '
                     '(their output says why)')

  networks = builder.make_networks(spec)
  counter = counting.Counter(prefix='learner')
  learner = builder.make_learner(
      jax.random.PRNGKey(settings.seed), networks,
      builder.make_dataset_iterator(settings.replay_address, spec), spec,
      counter=counter,
      logger=loggers.make_logger(settings.workdir, 'learner') if is_chief else None,
      processes=processes)
  # Every process restores together; the state of process 0 (its checkpoint's, if
  # any) reaches the others at the first step.
  checkpointer = None
  if is_chief:
    checkpointer = checkpointing.Checkpointer(
        os.path.join(settings.workdir, CHECKPOINT_DIRECTORY), {'learner': learner},
        fingerprint, settings.checkpoint_minutes)
  if not (checkpointer and checkpointer.restore()):
    learner.restore(learner.save())
  steps = int(multihost.broadcast_from_process_0(np.asarray(learner.save().steps)))
  server = None
  if is_chief:
    counter.increment(steps=steps)
    server = _VariableServer(learner, settings.variable_port)
    print(f'learner process 0 of {processes.num_processes} starts at step {steps}; '
          f'variables served at {os.uname().nodename}:{server.port}', flush=True)

  stop = _stop_on_signal()
  calls = 0
  while settings.max_learner_steps is None or steps < settings.max_learner_steps:
    learner.step()
    steps += config.sgd_steps_per_call
    calls += 1
    if checkpointer:
      checkpointer.save()
    # Every process checks at the same call, so all stop after the same step.
    if calls % _STOP_CHECK_CALLS == 0:
      asked = multihost.flagged_processes(stop.is_set())
      if asked:
        print(f'learner process {processes.process_id}: stopping at step {steps} '
              f'(SIGTERM or Ctrl-C to process(es) {asked})', flush=True)
        break
  state = learner.save()
  if checkpointer:
    checkpointer.save(force=True)
  print(f'learner process {processes.process_id} of {processes.num_processes} '
        f'finished at step {steps}; state digest {state_digest(state)}', flush=True)
  if server:
    server.freeze()
  if processes.is_multihost:
    jax.distributed.shutdown()  # Together, so that no process waits for a missing one.
  if server:
    if settings.keep_serving and not stop.is_set():
      print('serving the final variables until SIGTERM or Ctrl-C', flush=True)
      while not stop.wait(1):
        pass
    server.stop()
  return steps


class _VariableServer:
  """Process 0's Courier server of `get_variables` (what actors' variable clients call):
  the learner's latest variables, then (`freeze`) host copies of its final ones."""

  def __init__(self, learner: MetaMimicLearner, port: int):
    self._learner = learner
    self._frozen = None
    self._server = courier.Server(port=port or None)
    self._server.Bind('get_variables', self.get_variables)
    self._server.Start()

  @property
  def port(self) -> int:
    return self._server.port

  def get_variables(self, names: Sequence[str]) -> List:
    if self._frozen is None:
      return self._learner.get_variables(names)
    return [self._frozen[name] for name in names]

  def freeze(self) -> None:
    state = self._learner.save()
    names = [name for name, part in ((MetaMimicLearner.IMITATION_POLICY, state.imitation),
                                     (MetaMimicLearner.TASK_POLICY, state.task))
             if part is not None]
    self._frozen = dict(zip(names, self._learner.get_variables(names)))

  def stop(self) -> None:
    self._server.Stop()


def _stop_on_signal() -> threading.Event:
  """An event that SIGTERM or SIGINT (Ctrl-C) sets, in place of ending the process."""
  stop = threading.Event()
  for signal_number in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signal_number, lambda *_: stop.set())
  return stop


