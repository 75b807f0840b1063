"""Runs a Launchpad program as local processes and supervises them (local_mp).

Launchpad 0.5.0's own local_mp launcher cannot notice a dead node: with
terminal='current_terminal' each node runs under a bash wrapper piping its output through
sed (`run_locally/decorate_output`), so the wrapper's exit status is sed's, and the worker
manager holds the wrappers as foreign processes whose "clean termination is assumed". On
Ctrl-C every node gets the terminal's SIGINT at once and exits before anything can be
saved, and a node blocked inside Reverb's or Courier's C++ never runs Python's signal
handler, so Launchpad ends by "Killing entire runtime", launcher included.

Here the launcher is every node's parent, holds real exit statuses, and stops the
program in one order: final checkpoint from the nodes still alive, then SIGTERM, then
SIGKILL for any node that has not left within `STOP_SECONDS`. Nodes run in their own
process groups (a terminal's Ctrl-C reaches only the launcher) and die with the launcher
(PR_SET_PDEATHSIG), so nothing outlives it.
"""

import ctypes
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from typing import Callable, Collection, Dict, List, Mapping, Optional

import launchpad as lp
from launchpad import context as lp_context

# How often the launcher looks at its nodes.
POLL_SECONDS = 0.5
# Longest wait for the final checkpoint when the program stops early.
CHECKPOINT_SECONDS = 60.0
# Longest wait for nodes to leave after SIGTERM before they get SIGKILL.
STOP_SECONDS = 10.0
# Restarts of one stateless node; the next death stops the program.
MAX_RESTARTS = 3
# The launcher's exit status when a node died (signals give 128 + signal number).
NODE_DIED_STATUS = 1

# A node calling lp.stop() sends this to the launcher: the program ends by itself.
_PROGRAM_STOP_SIGNAL = signal.SIGUSR1
_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # Looked up before any fork.


def _node_process_setup() -> None:
  """Runs in the child between fork and exec (two system calls, no import, no lock): its
  own process group, so a terminal's Ctrl-C reaches only the launcher (not a new session:
  with autogroup scheduling that would undo the nodes' niceness against each other), and
  death with the launcher."""
  os.setpgid(0, 0)
  _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def describe_exit(returncode: int) -> str:
  """'exited with status 3' or 'killed by signal SIGKILL'."""
  if returncode < 0:
    return f'killed by signal {signal.Signals(-returncode).name}'
  return f'exited with status {returncode}'


@dataclasses.dataclass
class _Node:
  title: str  # 'learner/0'
  group: str
  command: List[str]
  env: Dict[str, str]
  process: Optional[subprocess.Popen] = None
  output: Optional[threading.Thread] = None  # Forwards the process's output.
  restarts: int = 0


def _commands(program: lp.Program, local_resources: Mapping[str, object]):
  """The nodes' commands, as Launchpad's local_mp launch makes them, except that lp.stop()
  in a node signals this launcher with _PROGRAM_STOP_SIGNAL."""
  stopper = functools.partial(os.kill, os.getpid(), _PROGRAM_STOP_SIGNAL)
  for label, nodes in program.groups.items():
    for node in nodes:
      node.launch_context.initialize(lp_context.LaunchType.LOCAL_MULTI_PROCESSING,
                                     local_resources.get(label), stopper)
  for label, nodes in program.groups.items():
    for node in nodes:
      for handle in node.input_handles:
        handle.connect(node, label)
  for node in program.get_all_nodes():
    node.bind_addresses()
  for label, nodes in program.groups.items():
    for command in nodes[0].to_executables(nodes, label, nodes[0].launch_context):
      yield _Node(command.title, label, command.command_as_list,
                  {**os.environ, **{k: str(v) for k, v in command.env_overrides.items()},
                   'PYTHONUNBUFFERED': '1'})


class Supervisor:
  """Starts the nodes, forwards their output, and stops the program on a node's death,
  on SIGINT / SIGTERM / SIGHUP, or when a node calls lp.stop()."""

  def __init__(self, program: lp.Program, local_resources: Mapping[str, object],
               restartable_groups: Collection[str] = (),
               checkpoint: Optional[Callable[[Collection[str]], str]] = None):
    """`checkpoint(alive_groups)` saves what the live nodes hold and returns a line to
    print; it runs before an early stop. Nodes of `restartable_groups` hold no state and
    are restarted in place (at most MAX_RESTARTS times each) when they die."""
    self._restartable = set(restartable_groups)
    self._checkpoint = checkpoint
    self._signal: Optional[int] = None
    self._stopping = False
    self._forced = False  # A second SIGINT / SIGTERM while stopping: no more waiting.
    self._output_lock = threading.Lock()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, _PROGRAM_STOP_SIGNAL):
      signal.signal(sig, self._on_signal)
    self._nodes = list(_commands(program, local_resources))

  def _on_signal(self, sig, frame) -> None:
    del frame
    if self._stopping:
      self._forced = sig != _PROGRAM_STOP_SIGNAL
    elif self._signal is None or sig != _PROGRAM_STOP_SIGNAL:
      self._signal = sig

  def _print(self, line: str) -> None:
    with self._output_lock:
      sys.stdout.write(line + '\n')
      sys.stdout.flush()

  def _forward(self, title: str, stream) -> None:
    prefix = f'[{title}] '.encode()
    for line in stream:
      with self._output_lock:
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.flush()

  def _start(self, node: _Node) -> None:
    with warnings.catch_warnings():
      # JAX warns of any fork in its process; this child only execs.
      warnings.filterwarnings('ignore', 'os.fork', RuntimeWarning)
      node.process = subprocess.Popen(
          node.command, env=node.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
          stdin=subprocess.DEVNULL, preexec_fn=_node_process_setup)
    node.output = threading.Thread(target=self._forward,
                                   args=(node.title, node.process.stdout), daemon=True)
    node.output.start()

  def _alive(self) -> List[_Node]:
    return [n for n in self._nodes if n.process.poll() is None]

  def run(self) -> int:
    """Runs the program to its end; returns the launcher's exit status."""
    for node in self._nodes:
      self._start(node)
    while True:
      if self._signal == _PROGRAM_STOP_SIGNAL:  # The coordinator saved and reported.
        self._stopping = True
        self._stop()
        return 0
      if self._signal is not None:
        name = signal.Signals(self._signal).name
        self._print(f'{name}: saving checkpoints, then stopping every node.')
        saved, stopped = self._save_and_stop()
        print(f'error: stopped by {name}; {saved}; {stopped}.', file=sys.stderr,
              flush=True)
        return 128 + self._signal
      for node in self._nodes:
        returncode = node.process.poll()
        if not returncode:
          continue  # Running, or done (as in Launchpad, status 0 is no failure).
        why = describe_exit(returncode)
        if node.group in self._restartable and node.restarts < MAX_RESTARTS:
          node.restarts += 1
          self._print(f'{node.title} {why}; restarting it '
                      f'(restart {node.restarts} of {MAX_RESTARTS}).')
          self._start(node)
          continue
        self._print(f'{node.title} {why}: saving checkpoints, then stopping every node.')
        saved, stopped = self._save_and_stop()
        print(f'error: node {node.title} {why}; {saved}; {stopped}. Re-run the same '
              'command to resume from the checkpoints.', file=sys.stderr, flush=True)
        return NODE_DIED_STATUS
      time.sleep(POLL_SECONDS)

  def _save_and_stop(self):
    self._stopping = True
    return self._save(), self._stop()

  def _save(self) -> str:
    """Runs the checkpoint callback for the live nodes, within CHECKPOINT_SECONDS."""
    if self._checkpoint is None:
      return 'nothing to save'
    alive = {n.group for n in self._alive()}
    result = ['checkpoint timed out']

    def save():
      try:
        result[0] = self._checkpoint(alive)
      except Exception as e:  # pylint: disable=broad-except  # Report, then stop.
        result[0] = f'checkpoint failed ({type(e).__name__}: {e})'

    thread = threading.Thread(target=save, daemon=True)
    thread.start()
    deadline = time.time() + CHECKPOINT_SECONDS
    while thread.is_alive() and time.time() < deadline and not self._forced:
      thread.join(POLL_SECONDS)
    self._print(result[0])
    return result[0]

  def _stop(self) -> str:
    """SIGTERM to every live node, SIGKILL to those still there after STOP_SECONDS."""
    for node in self._alive():
      node.process.send_signal(signal.SIGTERM)
    deadline = time.time() + STOP_SECONDS
    while self._alive() and time.time() < deadline and not self._forced:
      time.sleep(POLL_SECONDS / 5)
    killed = [n.title for n in self._alive()]
    for node in self._alive():
      node.process.kill()
    for node in self._nodes:
      node.process.wait()
      node.output.join(STOP_SECONDS)  # Its last lines come before the launcher's.
    return (f'killed {", ".join(killed)} after {STOP_SECONDS:g} s' if killed
            else 'every node stopped')
