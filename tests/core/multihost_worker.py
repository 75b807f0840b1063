"""One learner process of a multi-host job on this machine, for test_multihost.py.

  python -m tests.core.multihost_worker ADDRESS NUM_PROCESSES PROCESS_ID PROBLEM STEPS \
      OUT.npz

Joins the job, starts from its own seed (PROCESS_ID) and takes process 0's state, as
MetaMimicLearner does, then takes STEPS pmapped steps of PROBLEM ('linear' or
'metamimic') on its share of fixed batches (rows [i * B / N, (i + 1) * B / N) of each)
split over its local devices (the test gives it 2), and saves the state's leaves to OUT.npz. Bad settings:
one line, exit 1.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from metamimic_jax import jax_utils
from metamimic_jax import learning
from metamimic_jax import multihost
from metamimic_jax import networks as networks_lib
from tests.core import synthetic


def linear_problem():
  """A least-squares model of 4 weights: (initial state from a key, its SGD step with
  gradients pmean'd over `axis_name`, the fixed batch of step i), made in seconds."""
  init = lambda key: jax.random.normal(key, (4, 1))

  def make_step(axis_name=None):
    def step(w, batch):
      x, y = batch
      g = jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
      if axis_name is not None:
        g = jax.lax.pmean(g, axis_name)
      return w - 0.1 * g, {}
    return step

  def batch(i):
    rng = np.random.default_rng(i)
    return (rng.normal(size=(8, 4)).astype(np.float32),
            rng.normal(size=(8, 1)).astype(np.float32))

  return init, make_step, batch


def metamimic_problem():
  """The same three for the MetaMimic step on TINY_CONFIG's networks (batch 8)."""
  config = synthetic.TINY_CONFIG
  spec = synthetic.point_mass_spec()
  networks = networks_lib.make_networks(spec, config)
  init = lambda key: learning.init_training_state(
      key, networks, *networks_lib.dummy_inputs(spec), config)
  make_step = lambda axis_name=None: learning.make_sgd_step(networks, config, axis_name)
  batch = lambda i: synthetic.random_batch(spec, config.batch_size, seed=i)
  return init, make_step, batch


PROBLEMS = {'linear': linear_problem, 'metamimic': metamimic_problem}
BATCH_SIZE = 8  # Both problems'.


def run(processes: multihost.ProcessSettings, problem: str, steps: int, out: str
        ) -> None:
  multihost.initialize(processes)
  init, make_step, make_batch = PROBLEMS[problem]()
  devices = jax.local_devices()
  step_devices = multihost.pmap_devices(devices)
  share = multihost.process_batch_size(BATCH_SIZE, step_devices)
  state = init(jax.random.PRNGKey(processes.process_id))
  state = jax_utils.replicate(multihost.broadcast_from_process_0(state), devices)
  sgd_step = jax.pmap(make_step('devices'), axis_name='devices', devices=step_devices)
  rows = slice(processes.process_id * share, (processes.process_id + 1) * share)
  for i in range(steps):
    batch = jax.tree.map(lambda x: x[rows], make_batch(i))
    state, _ = sgd_step(state, jax_utils.put_sharded(
        jax_utils.shard(batch, len(devices)), devices))
  np.savez(out, *jax.tree.leaves(jax_utils.get_from_first_device(state)))


def main(argv):
  address, num_processes, process_id, problem, steps, out = argv[1:]
  try:
    run(multihost.ProcessSettings(address, int(num_processes), int(process_id)),
        problem, int(steps), out)
  except ValueError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  main(sys.argv)
