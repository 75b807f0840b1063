"""Acme loggers writing to the terminal, CSV and TensorBoard under a workdir."""

import os

from acme.utils import loggers
from acme.utils.loggers import tf_summary


def make_logger(workdir: str, label: str, time_delta: float = 10.0,
                print_fn=print) -> loggers.Logger:
  """Terminal every `time_delta` s; every write to CSV (flushed: others read it) and TB.

  Files: `workdir`/logs/<label>/logs.csv (appended to on resume) and
  `workdir`/logs/tensorboard/<label>.
  """
  terminal = loggers.TimeFilter(
      loggers.TerminalLogger(label=label, print_fn=print_fn), time_delta)
  csv = loggers.CSVLogger(workdir, label=label, add_uid=False, flush_every=1)
  tensorboard = tf_summary.TFSummaryLogger(
      os.path.join(workdir, 'logs', 'tensorboard', label), label)
  return FlattenFilter(loggers.NoneFilter(loggers.Dispatcher([terminal, csv, tensorboard])))


class FlattenFilter(loggers.Logger):
  """Flattens nested values ({'episode_return': {'task': r}} -> 'episode_return/task')."""

  def __init__(self, to: loggers.Logger):
    self._to = to

  def write(self, values: loggers.LoggingData) -> None:
    self._to.write(flatten(values))

  def close(self) -> None:
    self._to.close()


def flatten(values, prefix: str = '') -> loggers.LoggingData:
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}/'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat
