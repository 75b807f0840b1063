"""Single-process training: in-process Reverb, environments acting together
(batched_loop) while the learner steps on Acme's Agent schedule, periodic held-out
evaluation, checkpoints and a clean stop on Ctrl-C."""

import contextlib
import dataclasses
import os
import signal
import threading
import time
from typing import Dict, Iterator, Optional

from absl import logging
from acme import specs
from acme.utils import counting
import jax
import numpy as np
import reverb

from metamimic_jax import acting
from metamimic_jax import adders
from metamimic_jax import batched_loop
from metamimic_jax import checkpointing
from metamimic_jax import demo_sets
from metamimic_jax import evaluation
from metamimic_jax import loggers
from metamimic_jax import plotting
from metamimic_jax import storage
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import make_domain


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """What to run, beside the agent's hyperparameters (MetaMimicConfig)."""
  domain: str = 'point_mass'
  workdir: str = 'runs/point_mass'
  demo_dir: Optional[str] = None  # None: generate into workdir/demos on first use.
  num_demos: int = 200  # Recorded on first use; the successful ones are kept.
  held_out_fraction: float = 0.1
  num_demo_workers: int = 2
  max_env_steps: int = 300_000
  max_wall_minutes: float = 0.0  # 0: no limit.
  eval_every_env_steps: int = 10_000
  num_task_eval_episodes: int = 10
  checkpoint_minutes: float = 5.0
  seed: int = 0
  # Training environments acting together, with one policy call a step for all.
  num_envs: int = 1
  # 'metamimic', or 'task_only': the same D4PG learner on the task reward alone, its
  # actors running the task policy from the task's own initial states (no demos).
  agent: str = 'metamimic'


AGENTS = ('metamimic', checkpointing.TASK_ONLY)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(SystemExit):
  """A stop signal ended training: at the first, after saving a checkpoint.

  A SystemExit with the shell's status for the signal (130 for SIGINT): uncaught, it
  ends the program without a traceback; a caller that goes on catches it.
  """

  def __init__(self, signal_number: int):
    super().__init__(128 + signal_number)
    self.signal_number = signal_number


class _StopRequest(threading.Event):
  """Set by a stop signal, which it names; `graceful` once training has begun."""
  signal_number: int = signal.SIGINT
  graceful: bool = False


@contextlib.contextmanager
def _stop_requests() -> Iterator[_StopRequest]:
  """A request the first SIGINT or SIGTERM sets once training has begun; a second one,
  or one before (with nothing to save), stops at once.

  Installed here: Acme's EnvironmentLoop.run would hand signals to Launchpad's
  dispatcher, which swallows them in a single process.
  """
  stop = _StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield stop  # Signals reach the main thread only.
    return

  def request_stop(signal_number, frame):
    del frame
    if stop.is_set() or not stop.graceful:
      logging.warning('%s: stopping now%s', signal.Signals(signal_number).name,
                      ', without a checkpoint' if stop.graceful else '')
      raise Stopped(signal_number)
    stop.signal_number = signal_number
    stop.set()
    logging.warning('%s: stopping after this episode and its checkpoint (again to stop '
                    'at once)', signal.Signals(signal_number).name)

  previous = {number: signal.signal(number, request_stop) for number in STOP_SIGNALS}
  try:
    yield stop
  finally:
    for number, handler in previous.items():
      signal.signal(number, handler)


def run(settings: TrainSettings, config: MetaMimicConfig) -> Dict[str, float]:
  """Trains until max_env_steps (or the wall-time limit); returns the last evaluation.

  Checks the workdir, its checkpoints and the demonstrations before anything else:
  raises OSError, CheckpointError or DemonstrationError, with a clear message. The
  first SIGINT or SIGTERM ends the run after the current episode, with a checkpoint to
  resume from, by raising Stopped.
  """
  with _stop_requests() as stop:
    return _run(settings, config, stop)


def _run(settings: TrainSettings, config: MetaMimicConfig,
         stop: _StopRequest) -> Dict[str, float]:
  """run(), which ends early once `stop` is set."""
  if settings.agent not in AGENTS:
    raise ValueError(f'agent must be one of {AGENTS}, got {settings.agent!r}')
  if settings.num_envs < 1:
    raise ValueError(f'num_envs must be >= 1, got {settings.num_envs}')
  start = time.time()
  domain = make_domain(settings.domain)
  task_only = settings.agent == checkpointing.TASK_ONLY
  storage.check_writable(settings.workdir)
  checkpoint_directory = os.path.join(settings.workdir, 'checkpoints')
  fingerprint = checkpointing.fingerprint(domain.name, config, task_only)
  checkpointing.check_directory(checkpoint_directory, fingerprint)
  builder = MetaMimicBuilder(config, domain, task_only)
  train_demos = held_out_demos = ()
  if not task_only:
    demo_dir = settings.demo_dir or os.path.join(settings.workdir, 'demos')
    train_demos, held_out_demos = demo_sets.prepare(
        domain, demo_dir, generate_if_absent=settings.demo_dir is None,
        num_demos=settings.num_demos, held_out_fraction=settings.held_out_fraction,
        num_workers=settings.num_demo_workers, seed=settings.seed)
    logging.info('%d training and %d held-out demonstrations from %s',
                 len(train_demos), len(held_out_demos), demo_dir)
  environments = [builder.make_training_environment(train_demos, settings.seed + 1000 * i)
                  for i in range(settings.num_envs)]
  spec = specs.make_environment_spec(environments[0])
  networks = builder.make_networks(spec)

  num_envs = len(environments)
  server = reverb.Server(builder.make_replay_tables(
      spec, enforce_samples_per_insert=False, transitions_per_item=num_envs), port=None)
  address = f'localhost:{server.port}'
  key = jax.random.PRNGKey(settings.seed)
  learner_key, actor_key, imitation_key, task_key = jax.random.split(key, 4)

  # Children sync at once (time_delta=0): the loop's budget, the evaluations and the
  # checkpoints read exact counts, not ones up to a second old.
  counter = counting.Counter()
  learner = builder.make_learner(
      learner_key, networks,
      builder.make_dataset_iterator(address, spec, transitions_per_item=num_envs), spec,
      counter=counting.Counter(counter, 'learner', time_delta=0.),
      logger=loggers.make_logger(settings.workdir, 'learner'))
  adder = builder.make_adder(reverb.Client(address), spec, num_envs)
  actor = builder.make_actor_batch(
      jax.random.split(actor_key, num_envs), networks, spec, learner, adder,
      policy=builder.acting_policy)
  # The adder holds back each environment's n - 1 steps, fills items of one transition
  # per environment and writes them in groups: learn once min_replay_size transitions
  # are in replay.
  schedule = _LearnerSchedule(
      learner, actor, num_envs,
      min_observations=(max(config.min_replay_size, config.batch_size) +
                        num_envs * (config.n_step + 1) + adders.TRANSITIONS_PER_WRITE),
      observations_per_step=config.batch_size / config.samples_per_insert)
  loop = batched_loop.BatchedEnvironmentLoop(
      environments, actor, counter=counting.Counter(counter, 'actor', time_delta=0.),
      logger=loggers.make_logger(settings.workdir, 'actor'), update=schedule.update)

  task_evaluator = builder.make_actor(task_key, networks, spec, learner, policy='task',
                                      sigma=0)
  if not task_only:
    imitation_evaluator = builder.make_actor(imitation_key, networks, spec, learner,
                                             sigma=0)
    held_out_environment = builder.make_demo_environment(held_out_demos,
                                                         settings.seed + 1)
  task_environment = builder.make_task_environment(settings.seed + 2)
  eval_logger = loggers.make_logger(settings.workdir, 'evaluator', time_delta=0)

  checkpointer = checkpointing.Checkpointer(
      checkpoint_directory, {'learner': learner, 'counter': counter}, fingerprint,
      settings.checkpoint_minutes)
  if checkpointer.restore():
    logging.info('Resumed from %s at %s', checkpointer.directory, counter.get_counts())

  def evaluate() -> Dict[str, float]:
    results = ({} if task_only else
               evaluation.evaluate_imitation(imitation_evaluator, held_out_environment))
    if config.train_task_policy:
      results.update(evaluation.evaluate_task(task_evaluator, task_environment,
                                              settings.num_task_eval_episodes))
    counts = counter.get_counts()
    results.update(actor_steps=counts.get('actor_steps', 0),
                   learner_steps=counts.get('learner_steps', 0),
                   wall_minutes=(time.time() - start) / 60)
    eval_logger.write(results)
    return results

  def out_of_time() -> bool:
    return (settings.max_wall_minutes > 0 and
            time.time() - start > 60 * settings.max_wall_minutes)

  def actor_steps() -> int:
    return counter.get_counts().get('actor_steps', 0)

  def done() -> bool:
    return actor_steps() >= settings.max_env_steps or out_of_time()

  stop.graceful = True
  results = evaluate()
  next_evaluation = actor_steps() + settings.eval_every_env_steps
  finished = done()
  while not finished and not stop.is_set():
    # Whole episodes, so a run ends within one episode past max_env_steps, its wall
    # time or a stop signal, and evaluates after the first episode past each
    # evaluation point and at its end.
    loop.run_until_episode_end()
    finished = done()
    if finished or actor_steps() >= next_evaluation:
      results = evaluate()
      checkpointer.save()
      next_evaluation = actor_steps() + settings.eval_every_env_steps
  checkpointer.save(force=True)
  adder.close()
  server.stop()
  if stop.is_set():
    logging.warning('Stopped by %s at %d env steps; checkpoint saved in %s: run the '
                    'same command to resume.', signal.Signals(stop.signal_number).name,
                    actor_steps(), checkpointer.directory)
    raise Stopped(stop.signal_number)
  plotting.plot_learning_curve(
      evaluator_log(settings.workdir),
      os.path.join(settings.workdir, 'learning_curve.png'))
  if not task_only:
    plotting.plot_imitations(imitation_evaluator, held_out_environment,
                             os.path.join(settings.workdir, 'imitations.png'),
                             domain.trajectory_key)
  logging.info('Done. Metrics: %s/logs, checkpoints: %s, plots: %s',
               settings.workdir, checkpointer.directory, settings.workdir)
  return results


class _LearnerSchedule:
  """Acme's Agent schedule for a batch of environments: learner steps begin at
  min_observations and then come one per observations_per_step observations (several
  per observation below 1); the actor's parameters refresh after each step's learning."""

  def __init__(self, learner, actor: acting.ActorBatch, observations_per_update: int,
               min_observations: int, observations_per_step: float):
    self._learner = learner
    self._actor = actor
    self._observations_per_update = observations_per_update
    self._min_observations = min_observations
    self._observations_per_step = observations_per_step
    self._observations = 0
    self._learner_steps = 0

  def update(self) -> None:
    self._observations += self._observations_per_update
    beyond = self._observations - self._min_observations
    if beyond < 0:
      return
    due = int(beyond / self._observations_per_step) + 1
    for _ in range(due - self._learner_steps):
      self._learner.step()
    if due > self._learner_steps:
      self._learner_steps = due
      self._actor.update()


def evaluator_log(workdir: str) -> str:
  """The CSV of a run's held-out evaluations."""
  return os.path.join(workdir, 'logs', 'evaluator', 'logs.csv')


def evaluation_curve(workdir: str) -> Dict[str, np.ndarray]:
  """The evaluator's logged columns of a run in `workdir`, ordered by actor steps."""
  curve = plotting.read_csv(evaluator_log(workdir))
  order = np.argsort(curve['actor_steps'])
  return {key: values[order] for key, values in curve.items()}
