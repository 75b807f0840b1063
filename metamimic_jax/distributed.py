"""Launchpad node workers. Each builds its parts through MetaMimicBuilder; the program in
launchpad_programs/imitate.py only wires these nodes together.
"""

import dataclasses
import json
import os
import threading
import time
from typing import Callable, Collection, Dict, Optional, Sequence

from absl import logging
from acme import core
from acme import specs
from acme.utils import counting
from acme.utils import signals
import jax
import launchpad as lp
import numpy as np

from metamimic_jax import adders
from metamimic_jax import batched_loop
from metamimic_jax import checkpointing
from metamimic_jax import demo_sets
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import evaluation
from metamimic_jax import loggers
from metamimic_jax import numerics
from metamimic_jax import plotting
from metamimic_jax import process_env
from metamimic_jax import sizing
from metamimic_jax import storage
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import make_domain


@dataclasses.dataclass(frozen=True)
class ProgramSettings:
  """What the distributed program runs, beside the agent's hyperparameters."""
  domain: str = 'point_mass'
  workdir: str = 'runs/imitate_point_mass'
  demo_dir: str = 'runs/imitate_point_mass/demos'  # Holds train.h5 and held_out.h5.
  num_actors: int = 2
  envs_per_actor: int = 1  # Environments an actor steps together, one policy call a step.
  max_actor_steps: int = 1_000_000
  min_sigma: float = 0.1  # Actor i explores with a sigma spaced geometrically
  max_sigma: float = 0.4  # between these (a single actor explores as the config says).
  eval_every_seconds: float = 60.0  # Evaluations are at least this far apart ...
  eval_every_learner_steps: int = 1000  # ... and this many learner steps.
  full_eval_every: int = 5  # Every n-th evaluation (and the last) is full ...
  eval_subset_size: int = 3  # ... the others take this many held-out demos or episodes.
  num_task_eval_episodes: int = 10
  progress_seconds: float = 30.0
  checkpoint_minutes: float = 5.0  # Between checkpoints of learner, counter and replay ...
  first_checkpoint_seconds: float = 60.0  # ... the first this early, if sooner.
  # Whether the learner's malloc keeps the memory it frees; None: as
  # sizing.learner_keeps_freed_memory says for the config and domain.
  learner_keeps_freed_memory: Optional[bool] = None
  seed: int = 0

  def actor_sigma(self, actor_id: int) -> Optional[float]:
    """Actor `actor_id`'s fixed sigma; None: the config's exploration."""
    if self.num_actors == 1:
      return None
    return float(np.geomspace(self.min_sigma, self.max_sigma, self.num_actors)[actor_id])


def environment_spec(builder: MetaMimicBuilder,
                     train_demos: Sequence[demos_lib.Demonstration]) -> specs.EnvironmentSpec:
  """The spec every node shares: that of the demo-conditioned training environment."""
  return specs.make_environment_spec(builder.make_demo_environment(train_demos[:1], 0))


def prepare_workdir(settings: ProgramSettings, config: MetaMimicConfig,
                    generate_demos: bool, num_demos: int
                    ) -> Sequence[demos_lib.Demonstration]:
  """Checks the workdir before any node starts; returns the training demonstrations.

  Generates the demonstrations first if asked and they are absent, keeping the
  successful ones.

  Raises OSError (unwritable or full workdir), CheckpointError (incompatible checkpoints) or
  DemonstrationError (missing or bad demonstrations, too few successes), each with a
  clear message.
  """
  storage.check_writable(settings.workdir)
  check_resumable(settings, config)
  layout_path = _replay_layout_path(settings)
  os.makedirs(os.path.dirname(layout_path), exist_ok=True)
  with open(layout_path, 'w') as f:
    json.dump({'version': adders.LAYOUT_VERSION}, f)
  train, _ = demo_sets.prepare(
      make_domain(settings.domain), settings.demo_dir, generate_if_absent=generate_demos,
      num_demos=num_demos, seed=settings.seed)
  return train


class _Parts:
  """What every node needs: domain, builder, demonstrations, spec and networks."""

  def __init__(self, settings: ProgramSettings, config: MetaMimicConfig):
    self.domain = make_domain(settings.domain)
    self.builder = MetaMimicBuilder(config, self.domain)
    self.train_demos, self.held_out_demos = demo_sets.load(self.domain,
                                                           settings.demo_dir)
    self.spec = environment_spec(self.builder, self.train_demos)
    self.networks = self.builder.make_networks(self.spec)


def exit_on_stop() -> None:
  """Ends this node's process as soon as the program stops (call it first in __init__,
  so a node still being built when a short run ends leaves too).

  For nodes whose state is already saved when the program stops (the coordinator, or on
  a signal or a node's death the launcher, checkpoints first). This runs only when the
  main thread next runs Python: one blocked inside Reverb's or Courier's C++ (a
  rate-limited insert, a call to a node that has exited) leaves when the launcher
  (`supervision.Supervisor`) kills it after its grace period.
  """
  lp.register_stop_handler(lambda: os._exit(0))  # pylint: disable=protected-access


def checkpoint_directory(settings: ProgramSettings, name: str) -> str:
  return os.path.join(settings.workdir, 'checkpoints', name)


class CheckpointedCounter(counting.Counter):
  """The program's step counter; restores its counts on start, saves them when asked
  (`checkpoint_program`)."""

  def __init__(self, settings: ProgramSettings, config: MetaMimicConfig):
    super().__init__()
    self._checkpointer = checkpointing.Checkpointer(
        checkpoint_directory(settings, 'counter'), {'counter': self},
        checkpointing.fingerprint(settings.domain, config),
        settings.checkpoint_minutes)
    self._checkpointer.restore()

  def save_checkpoint(self) -> Dict[str, float]:
    """Saves now; returns the counts saved."""
    with self._lock:  # Counter's own: no increment between the two.
      counts = self.get_counts()
      self._checkpointer.save(force=True)
    return counts


class LearnerNode:
  """Steps the learner on replay batches, serves variables, checkpoints periodically."""

  def __init__(self, settings: ProgramSettings, config: MetaMimicConfig, replay,
               counter):
    exit_on_stop()
    parts = _Parts(settings, config)
    keep_freed_memory = settings.learner_keeps_freed_memory
    if keep_freed_memory is None:
      keep_freed_memory = sizing.learner_keeps_freed_memory(config, parts.spec)
    # Before JAX runs anything here.
    keep_freed_memory = keep_freed_memory and process_env.keep_freed_memory()
    self._learner = parts.builder.make_learner(
        jax.random.PRNGKey(settings.seed), parts.networks,
        parts.builder.make_dataset_iterator(replay.server_address, parts.spec,
                                            transitions_per_item=settings.envs_per_actor),
        parts.spec,
        counter=counting.Counter(counter, 'learner'),
        logger=loggers.make_logger(settings.workdir, 'learner'))
    self._pinned = _PinnedState(self._learner)
    self._checkpointer = checkpointing.Checkpointer(
        checkpoint_directory(settings, 'learner'), {'learner': self._pinned},
        checkpointing.fingerprint(settings.domain, config), settings.checkpoint_minutes)
    self._checkpointer.restore()
    self._save_lock = threading.Lock()
    # The learner's checkpoint says how many steps it took: the counter, saved at
    # another moment (or later, when the learner died), follows it.
    steps = int(self._learner.save().steps)
    counts = counter.get_counts()
    if counts.get('learner_steps', 0) != steps:
      counter.increment(learner_steps=steps - counts.get('learner_steps', 0))
    # Actors wait for this node's variables, so nothing was added since the restore.
    print(f'learner starts at step {steps}: actor steps '
          f'{counts.get("actor_steps", 0):.0f}, replay {replay_size(replay)} items; '
          f'malloc {"keeps" if keep_freed_memory else "returns"} freed memory',
          flush=True)

  def run(self) -> None:
    with signals.runtime_terminator():
      while True:
        try:
          self._learner.step()
        except numerics.NonFiniteError as e:  # One line, exit status 1.
          raise SystemExit(f'error: {e}') from None

  def get_variables(self, names: Sequence[str]):
    return self._learner.get_variables(names)

  def save_checkpoint(self) -> int:
    """Saves the state of the last finished step (steps replace the state whole);
    returns its step."""
    with self._save_lock:
      steps = int(self._pinned.pin().steps)
      self._checkpointer.save(force=True)
    return steps


class _PinnedState(core.Saveable):
  """A learner's state as `pin()` took it: the checkpoint then holds a known step while
  the learner steps on."""

  def __init__(self, learner: core.Saveable):
    self._learner = learner
    self._state = None

  def pin(self):
    self._state = self._learner.save()
    return self._state

  def save(self):
    # Before any pin (a restore reads the live state as its template): the learner's.
    return self._learner.save() if self._state is None else self._state

  def restore(self, state) -> None:
    self._learner.restore(state)


# Scheduling priorities (added niceness) of the nodes that must not take the learner's
# cycles: the rate limiter, not the scheduler, should pace actors, and evaluators run in
# whatever the others leave.
ACTOR_NICENESS = 5
EVALUATOR_NICENESS = 15


def lower_priority(niceness: int) -> None:
  """Adds `niceness` to every thread of this process (Linux nices threads one by one;
  os.nice alone would leave the threads already started, e.g. Courier's, as they are).
  Threads started later inherit it."""
  task_dir = '/proc/self/task'
  if not os.path.isdir(task_dir):
    os.nice(niceness)
    return
  for tid in map(int, os.listdir(task_dir)):
    try:
      os.setpriority(os.PRIO_PROCESS, tid,
                     min(os.getpriority(os.PRIO_PROCESS, tid) + niceness, 19))
    except ProcessLookupError:  # Ended meanwhile.
      continue


class ActorNode:
  """Imitates training demonstrations with exploration noise, writing to replay."""

  def __init__(self, settings: ProgramSettings, config: MetaMimicConfig,
               actor_id: int, replay, learner, counter):
    exit_on_stop()
    lower_priority(ACTOR_NICENESS)
    parts = _Parts(settings, config)
    seed = settings.seed * 1000 + actor_id + 1
    environments = [parts.builder.make_demo_environment(parts.train_demos,
                                                        seed + 100_000 * i)
                    for i in range(settings.envs_per_actor)]
    actor = parts.builder.make_actor_batch(
        jax.random.split(jax.random.PRNGKey(seed), len(environments)), parts.networks,
        parts.spec, learner,
        parts.builder.make_adder(replay, parts.spec, len(environments)),
        sigma=settings.actor_sigma(actor_id), variable_update_period=100,
        asynchronous_variables=True)
    self._loop = batched_loop.BatchedEnvironmentLoop(
        # Every episode's steps reach the program's counter at once (time_delta 0): an
        # actor blocked by the rate limiter would otherwise hold them back indefinitely.
        environments, actor, counter=counting.Counter(counter, 'actor', time_delta=0.),
        logger=loggers.make_logger(settings.workdir, f'actor_{actor_id}', time_delta=30))

  def run(self) -> None:
    self._loop.run()


class EvaluatorNode:
  """One-shot imitation of held-out demos, or the task policy on fresh episodes.

  Runs at low priority; between full evaluations it takes a rotating subset of the
  held-out demos (or a few task episodes), so it costs the learner little.
  """

  def __init__(self, settings: ProgramSettings, config: MetaMimicConfig, policy: str,
               learner, counter):
    exit_on_stop()
    lower_priority(EVALUATOR_NICENESS)
    parts = _Parts(settings, config)
    self._settings = settings
    self._policy = policy
    self._counter = counter
    seed = settings.seed * 1000 + 999
    self._actor = parts.builder.make_actor(
        jax.random.PRNGKey(seed), parts.networks, parts.spec, learner, policy=policy,
        sigma=0)
    self._trajectory_key = parts.domain.trajectory_key
    self._environment = (parts.builder.make_demo_environment(parts.held_out_demos, seed)
                         if policy == 'imitation' else
                         parts.builder.make_task_environment(seed))
    self._logger = loggers.make_logger(settings.workdir, f'evaluator_{policy}',
                                       time_delta=0)
    self._lock = threading.Lock()
    self._round = 0
    self._latest = {}

  def evaluate(self, full: bool = False) -> Dict[str, float]:
    """Evaluates the latest policy, fully if `full` or when the schedule says so."""
    settings = self._settings
    with self._lock:
      counts = self._counter.get_counts()
      num_items = (self._environment.num_demonstrations if self._policy == 'imitation'
                   else settings.num_task_eval_episodes)
      indices = None if full else evaluation.scheduled_subset(
          self._round, num_items, settings.eval_subset_size, settings.full_eval_every)
      evaluated = num_items if indices is None else len(indices)
      if self._policy == 'imitation':
        results = evaluation.evaluate_imitation(self._actor, self._environment, indices)
      else:
        results = evaluation.evaluate_task(self._actor, self._environment, evaluated)
      self._round += 1
      results.update(evaluated=evaluated, full_evaluation=float(indices is None),
                     actor_steps=counts.get('actor_steps', 0),
                     learner_steps=counts.get('learner_steps', 0))
      self._logger.write(results)
      self._latest = results
      return results

  def latest(self) -> Dict[str, float]:
    """The last evaluation's results ({} before the first); never waits on one."""
    return self._latest

  def plot_imitations(self, png: str) -> None:
    with self._lock:
      plotting.plot_imitations(self._actor, self._environment, png,
                               self._trajectory_key)

  def run(self) -> None:
    """Evaluates now, then whenever the policy has learnt enough to have changed."""
    evaluated_at = self.evaluate()['learner_steps']
    while not lp.wait_for_stop(self._settings.eval_every_seconds):
      learner_steps = self._counter.get_counts().get('learner_steps', 0)
      if learner_steps - evaluated_at >= self._settings.eval_every_learner_steps:
        evaluated_at = self.evaluate()['learner_steps']


class Coordinator:
  """Checkpoints learner, counter and replay together, early and then periodically;
  ends the program at max_actor_steps after a final checkpoint and evaluation report."""

  def __init__(self, settings: ProgramSettings, replay, counter, learner, evaluators):
    self._settings = settings
    self._replay = replay
    self._counter = counter
    self._learner = learner
    self._evaluators = evaluators

  def _checkpoint(self) -> None:
    print(checkpoint_program(self._learner, self._counter, self._replay), flush=True)

  def run(self) -> None:
    start = time.time()
    progress = Progress(self._settings.max_actor_steps)
    last_print = start
    period = 60 * self._settings.checkpoint_minutes
    next_checkpoint = start + min(self._settings.first_checkpoint_seconds, period)
    while True:
      counts = self._counter.get_counts()
      steps = counts.get('actor_steps', 0)
      if steps >= self._settings.max_actor_steps:
        break
      if time.time() >= next_checkpoint:
        self._checkpoint()
        next_checkpoint = time.time() + period
      if time.time() - last_print >= self._settings.progress_seconds:
        last_print = time.time()
        print(progress.line(counts, last_print, self._evaluators[0].latest()),
              flush=True)
      if lp.wait_for_stop(2):  # Stopped from outside: the launcher checkpoints.
        return
    logging.info('Reached %d actor steps; finishing.', steps)
    self._checkpoint()
    report = write_report(self._settings,
                          [e.evaluate(full=True) for e in self._evaluators],
                          self._counter.get_counts(), time.time() - start)
    self._evaluators[0].plot_imitations(os.path.join(self._settings.workdir,
                                                     'imitations.png'))
    print(f'\nMetaMimic run finished after {steps} actor steps.\n'
          f'  metrics:     {os.path.join(self._settings.workdir, "logs")}\n'
          f'  checkpoints: {os.path.join(self._settings.workdir, "checkpoints")}\n'
          f'  report:      {report}\n', flush=True)
    lp.stop()


class Progress:
  """One line on the run: actor steps, learner steps/s, latest held-out result, ETA."""

  def __init__(self, max_actor_steps: int):
    self._max_actor_steps = max_actor_steps
    self._previous = None  # (time, actor steps, learner steps)

  def line(self, counts: Dict[str, float], now: float,
           evaluation_results: Dict[str, float]) -> str:
    actor_steps = counts.get('actor_steps', 0)
    learner_steps = counts.get('learner_steps', 0)
    text = (f'progress: {actor_steps:.0f}/{self._max_actor_steps} actor steps '
            f'({100 * actor_steps / self._max_actor_steps:.0f}%)')
    if self._previous is not None:
      seconds = max(now - self._previous[0], 1e-9)
      actor_rate = (actor_steps - self._previous[1]) / seconds
      text += (f', {actor_rate:.0f} actor steps/s, learner '
               f'{(learner_steps - self._previous[2]) / seconds:.1f} steps/s')
    else:
      actor_rate = 0.0
    self._previous = (now, actor_steps, learner_steps)
    if 'imitation_reward' in evaluation_results:
      errors = ''.join(f', {name[:-3].replace("_", " ")} {value:.1f} cm'
                       for name, value in evaluation_results.items()
                       if name.endswith('_cm'))
      text += (f'; held-out imitation reward {evaluation_results["imitation_reward"]:.3f}'
               f'{errors} (at {evaluation_results["actor_steps"]:.0f} actor steps)')
    if actor_rate > 0:
      text += (f'; ETA {(self._max_actor_steps - actor_steps) / actor_rate / 60:.0f} '
               'min')
    return text


def write_report(settings: ProgramSettings, results: Sequence[Dict[str, float]],
                 counts: Dict[str, float], seconds: float) -> str:
  """Writes report.json and learning-curve plots; returns the report's path."""
  workdir = settings.workdir
  for policy in ('imitation', 'task'):
    plotting.plot_learning_curve(
        os.path.join(workdir, 'logs', f'evaluator_{policy}', 'logs.csv'),
        os.path.join(workdir, f'learning_curve_{policy}.png'),
        keys=('imitation_reward',) if policy == 'imitation' else ('task_success',))
  final = {}
  for result in results:
    final.update(result)
  report = {'settings': dataclasses.asdict(settings), 'counts': counts,
            'final_evaluation': final, 'seconds_this_launch': seconds}
  path = os.path.join(workdir, 'report.json')
  with open(path, 'w') as f:
    json.dump(report, f, indent=2, default=float)
  return path


def replay_size(replay) -> int:
  """Items in every table of a Reverb client's server."""
  return sum(info.current_size for info in replay.server_info().values())


def checkpoint_program(learner=None, counter=None, replay=None) -> str:
  """Checkpoints learner, counter and replay (clients of their nodes; None for a dead
  one), one right after the other; returns what was saved, in one line."""
  saved = []
  if learner is not None:
    saved.append(f'learner step {learner.save_checkpoint()}')
  if counter is not None:
    saved.append(f'actor steps {counter.save_checkpoint().get("actor_steps", 0):.0f}')
  if replay is not None:
    before = replay_size(replay)  # Actors go on adding while Reverb saves.
    replay.checkpoint()
    after = replay_size(replay)
    saved.append(f'replay {before} items' if before == after else
                 f'replay {before}-{after} items')
  return 'checkpoint: ' + (', '.join(saved) if saved else 'nothing left to save')


def checkpoint_live_nodes(replay, counter, learner
                          ) -> Callable[[Collection[str]], str]:
  """For the launcher: checkpoints, through the program's handles, those of learner,
  counter and replay whose group is in `alive_groups`."""

  def checkpoint(alive_groups: Collection[str]) -> str:
    handles = {'learner': learner, 'counter': counter, 'replay': replay}
    return checkpoint_program(**{
        group: handle.dereference() if group in alive_groups else None
        for group, handle in handles.items()})

  return checkpoint


def check_resumable(settings: ProgramSettings, config: MetaMimicConfig) -> None:
  """Raises CheckpointError if the workdir holds checkpoints `config` cannot resume."""
  fingerprint = checkpointing.fingerprint(settings.domain, config)
  for name in ('learner', 'counter'):
    checkpointing.check_directory(checkpoint_directory(settings, name), fingerprint)
  replay = checkpoint_directory(settings, 'replay')
  if os.path.isdir(replay) and os.listdir(replay):
    try:
      with open(_replay_layout_path(settings)) as f:
        version = json.load(f)['version']
    except (OSError, ValueError, KeyError, TypeError):
      version = None
    if version != adders.LAYOUT_VERSION:
      raise checkpointing.CheckpointError(
          f'{replay}: its transitions are stored in replay layout '
          f'{version or "1 or older"}, and this code reads layout '
          f'{adders.LAYOUT_VERSION}: resume with the code that wrote it, or use a new '
          '--workdir')


def _replay_layout_path(settings: ProgramSettings) -> str:
  """Where the program records how its replay checkpoints store transitions."""
  return checkpoint_directory(settings, 'replay_layout.json')
