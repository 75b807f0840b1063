"""One MetaMimicLearner process of a two-process job, for test_learner.py.

  python -m tests.learner_multihost_worker ADDRESS PROCESS_ID OUT.npz

Starts the learner from its own seed (PROCESS_ID), takes STEPS steps on its half of
fixed synthetic batches, then restores (process 0: its state; process 1: its stale
initial one) and takes one more step; saves the state's leaves, its counts and how
many log lines it wrote.
"""

import sys

import jax
import numpy as np

from metamimic_jax import jax_utils
from metamimic_jax import learner as learner_lib
from metamimic_jax import multihost
from metamimic_jax import networks as networks_lib
from tests.core import synthetic

STEPS = 2


class _ListLogger:

  def __init__(self):
    self.rows = []

  def write(self, row):
    self.rows.append(row)


def main(argv):
  address, process_id, out = argv[1], int(argv[2]), argv[3]
  processes = multihost.ProcessSettings(address, num_processes=2, process_id=process_id)
  multihost.initialize(processes)
  config = synthetic.TINY_CONFIG
  spec = synthetic.point_mass_spec()
  networks = networks_lib.make_networks(spec, config)
  devices = jax.local_devices()
  share = config.batch_size // 2
  rows = slice(process_id * share, (process_id + 1) * share)
  batches = (jax_utils.put_sharded(jax_utils.shard(jax.tree.map(
      lambda x: x[rows], synthetic.random_batch(spec, config.batch_size, seed=i)),
      len(devices)), devices) for i in range(STEPS + 1))
  logger = _ListLogger()
  learner = learner_lib.MetaMimicLearner(
      networks, jax.random.PRNGKey(process_id), batches,
      *networks_lib.dummy_inputs(spec), config, logger=logger, log_every_seconds=0,
      process_id=process_id, num_processes=2)
  initial = learner.save()
  for _ in range(STEPS):
    learner.step()
  # Every process restores; only process 0's state counts, process 1's stale one is
  # overwritten at the next step.
  learner.restore(learner.save() if process_id == 0 else initial)
  learner.step()
  counts = learner._counter.get_counts()  # pylint: disable=protected-access
  np.savez(out, *jax.tree.leaves(learner.save()), steps=counts.get('steps', 0),
           log_rows=len(logger.rows))


if __name__ == '__main__':
  main(sys.argv)
