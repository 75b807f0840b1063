"""Checks that a directory the run writes to (workdir, demo output) can take its files."""

import os
import tempfile

# A probe this large must fit before anything starts: a full disk (or a file-size limit)
# then stops the run with one line, not a traceback from the first logger or checkpoint.
PROBE_BYTES = 1 << 20


def check_writable(directory: str) -> None:
  """Creates `directory` if needed and writes, syncs and removes a probe file in it.

  Raises OSError with a one-line message naming the directory when that fails
  (unwritable, not a directory, full disk).
  """
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise OSError(f'{directory}: exists and is not a directory')
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix='.probe_') as probe:
      probe.write(bytes(PROBE_BYTES))
      probe.flush()
      os.fsync(probe.fileno())
  except OSError as e:
    raise OSError(f'{directory}: cannot write there ({e.strerror or e})') from e
