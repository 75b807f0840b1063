"""Running an entry point: absl's app.run, with Ctrl-C ending it in one line."""

import signal
import sys
from typing import Callable, List

from absl import app


def run(main: Callable[[List[str]], object]) -> None:
  """app.run(main); a KeyboardInterrupt (Ctrl-C) prints one line to stderr and exits
  with the shell's status for SIGINT (130) instead of a traceback. Entry points that
  stop cleanly on SIGINT themselves (train.py, the Launchpad programs) never raise it."""
  try:
    app.run(main)
  except KeyboardInterrupt:
    print('Stopped by SIGINT (Ctrl-C).', file=sys.stderr)
    sys.exit(128 + signal.SIGINT)
