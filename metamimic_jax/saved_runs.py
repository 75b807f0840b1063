"""Trained agents read back from a run's workdir, for evaluation after the run.

Both entry points checkpoint the learner through `checkpointing.Checkpointer`:
experiments/train.py under `<workdir>/checkpoints`, the Launchpad program under
`<workdir>/checkpoints/learner`. The run's domain and config come from the checkpoint's
fingerprint, so nothing about the run needs repeating.
"""

import os
from typing import Dict, NamedTuple, Tuple

from acme import specs
import jax

from metamimic_jax import acting
from metamimic_jax import checkpointing
from metamimic_jax import demonstrations
from metamimic_jax import learner as learner_lib
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import base
from metamimic_jax.environments import make_domain
from metamimic_jax.networks import MetaMimicNetworks

# Where each entry point keeps the learner's checkpoints, relative to its workdir.
LEARNER_CHECKPOINT_DIRECTORIES = (os.path.join('checkpoints', 'learner'),  # Launchpad.
                                  'checkpoints')  # experiments/train.py.


class SavedRun(NamedTuple):
  domain: base.Domain
  config: MetaMimicConfig
  builder: MetaMimicBuilder  # Task-only for the task-only baseline's runs.
  checkpoint_directory: str


def open_run(workdir: str) -> SavedRun:
  """The run in `workdir`; CheckpointError if it has no checkpoint this code can read."""
  for relative in LEARNER_CHECKPOINT_DIRECTORIES:
    directory = os.path.join(workdir, relative)
    found = checkpointing.newest_fingerprint(directory)
    if found is not None:
      break
  else:
    raise checkpointing.CheckpointError(
        f'{workdir}: no checkpoint in ' +
        ' or '.join(os.path.join(workdir, d) for d in LEARNER_CHECKPOINT_DIRECTORIES))
  domain_name, config, task_only = checkpointing.config_from_fingerprint(found)
  try:
    domain = make_domain(domain_name)
  except ValueError as e:
    raise checkpointing.CheckpointError(f'{directory}: {e}') from e
  return SavedRun(domain, config, MetaMimicBuilder(config, domain, task_only), directory)


def demo_environment(run: SavedRun, demos_path: str) -> base.DemoConditionedEnvironment:
  """The run's demo-conditioned environment on the demonstrations in `demos_path`;
  DemonstrationError unless they are of the run's domain and observation shapes."""
  raw_spec = run.domain.make_environment(0).observation_spec()
  demos = demonstrations.load(demos_path, domain=run.domain.name,
                              observation_shapes={k: s.shape for k, s in raw_spec.items()})
  return run.builder.make_demo_environment(demos, seed=0)


def restore_learner(run: SavedRun, environment_spec: specs.EnvironmentSpec,
                    seed: int = 0) -> Tuple[MetaMimicNetworks, learner_lib.MetaMimicLearner]:
  """The run's networks and its learner, restored from the newest checkpoint.
  `environment_spec`: its training environment's."""
  networks = run.builder.make_networks(environment_spec)
  learner = run.builder.make_learner(jax.random.PRNGKey(seed), networks, iter(()),
                                     environment_spec)
  checkpointer = checkpointing.Checkpointer(
      run.checkpoint_directory, {'learner': learner},
      checkpointing.fingerprint(run.domain.name, run.config, run.builder.task_only))
  if not checkpointer.restore():
    raise checkpointing.CheckpointError(f'{run.checkpoint_directory}: no checkpoint')
  return networks, learner


def restore_policies(run: SavedRun, environment_spec: specs.EnvironmentSpec,
                     seed: int = 0) -> Dict[str, acting.MetaMimicActor]:
  """Noise-free actors of the run's trained policies ('imitation' unless the run is
  task-only, and 'task' when it trained one), with the learner's parameters restored
  from its newest checkpoint. `environment_spec`: its training environment's."""
  builder = run.builder
  networks, learner = restore_learner(run, environment_spec, seed)
  policies = (() if builder.task_only else ('imitation',)) + (
      ('task',) if run.config.train_task_policy else ())
  return {policy: builder.make_actor(jax.random.PRNGKey(seed), networks, environment_spec,
                                     learner, policy=policy, sigma=0)
          for policy in policies}
