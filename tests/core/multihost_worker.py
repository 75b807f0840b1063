"""One learner process of a multi-host job on this machine, for test_multihost.py.

  python -m tests.core.multihost_worker ADDRESS NUM_PROCESSES PROCESS_ID STEPS OUT.npz

Joins the job, starts from its own seed (PROCESS_ID) and takes process 0's state, as
MetaMimicLearner does, then takes STEPS pmapped steps on its share of the fixed
synthetic batches (rows [i * B / N, (i + 1) * B / N) of each) split over its 2 local
devices, and saves the state's leaves to OUT.npz. Bad settings: one line, exit 1.
"""

import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
os.environ['JAX_PLATFORMS'] = 'cpu'

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from metamimic_jax import jax_utils
from metamimic_jax import learning
from metamimic_jax import multihost
from metamimic_jax import networks as networks_lib
from tests.core import synthetic


def run(processes: multihost.ProcessSettings, steps: int, out: str) -> None:
  multihost.initialize(processes)
  config = synthetic.TINY_CONFIG
  spec = synthetic.point_mass_spec()
  networks = networks_lib.make_networks(spec, config)
  devices = jax.local_devices()
  step_devices = multihost.pmap_devices(devices)
  share = multihost.process_batch_size(config.batch_size, step_devices)
  state = learning.init_training_state(
      jax.random.PRNGKey(processes.process_id), networks,
      *networks_lib.dummy_inputs(spec), config)
  state = jax_utils.replicate(multihost.broadcast_from_process_0(state), devices)
  sgd_step = jax.pmap(learning.make_sgd_step(networks, config, axis_name='devices'),
                      axis_name='devices', devices=step_devices)
  rows = slice(processes.process_id * share, (processes.process_id + 1) * share)
  for i in range(steps):
    batch = jax.tree.map(lambda x: x[rows],
                         synthetic.random_batch(spec, config.batch_size, seed=i))
    state, _ = sgd_step(state, jax_utils.put_sharded(
        jax_utils.shard(batch, len(devices)), devices))
  np.savez(out, *jax.tree.leaves(jax_utils.get_from_first_device(state)))


def main(argv):
  address, num_processes, process_id, steps, out = argv[1:]
  try:
    run(multihost.ProcessSettings(address, int(num_processes), int(process_id)),
        int(steps), out)
  except ValueError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  main(sys.argv)
