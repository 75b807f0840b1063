r"""The task-policy experiment: MetaMimic's task policy against D4PG trained on the task
reward alone (no demonstrations) and against the demonstrators.

  python experiments/task_policy.py --domain=point_mass --seeds=0,1,2 \
      --max_env_steps=200000 --output_dir=runs/task_policy

For every training seed both agents train single-process (experiments/train.py's loop)
on the same budget of env steps, MetaMimic on the demonstrations in --demo_dir (recorded
there on first use), the task-only D4PG on fresh task episodes. Their task policies and
the demonstrators then run on the same fresh task seeds, without noise. Prints and
writes (task_policy.json, task_policy.png) success rate and mean steps to first success,
each as mean and standard deviation over the training seeds. Runs live in
<output_dir>/<agent>_seed<seed>; re-running resumes them.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import baselines
from metamimic_jax import checkpointing
from metamimic_jax import cli
from metamimic_jax import demo_sets
from metamimic_jax import demonstrations
from metamimic_jax import evaluation
from metamimic_jax import flags as config_flags
from metamimic_jax import plotting
from metamimic_jax import saved_runs
from metamimic_jax import training
from metamimic_jax.environments import DOMAIN_NAMES
from metamimic_jax.environments import make_domain

import json

from absl import app
from absl import flags
from absl import logging
from acme import specs
import numpy as np

_DOMAIN = flags.DEFINE_enum('domain', 'point_mass', DOMAIN_NAMES, 'Domain.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Runs and results (default: runs/task_policy_<domain>).')
_DEMO_DIR = flags.DEFINE_string('demo_dir', None, "MetaMimic's train.h5 and held_out.h5 "
                                '(default: <output_dir>/demos, recorded on first use).')
_NUM_DEMOS = flags.DEFINE_integer('num_demos', 200, 'Demos to record on first use.',
                                  lower_bound=2)
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds.')
_MAX_ENV_STEPS = flags.DEFINE_integer('max_env_steps', 200_000,
                                      'Env steps each agent trains for.', lower_bound=1)
_EVAL_EVERY = flags.DEFINE_integer('eval_every_env_steps', 20_000,
                                   'Env steps between training-time evaluations.',
                                   lower_bound=1)
_NUM_TASK_EPISODES = flags.DEFINE_integer('num_task_episodes', 20,
                                          'Fresh task seeds every policy is run on.',
                                          lower_bound=1)
_FIRST_TASK_SEED = flags.DEFINE_integer('first_task_seed', 1_000_000,
                                        'The first fresh task seed.', lower_bound=0)

AGENTS = ('metamimic', checkpointing.TASK_ONLY)


def _spread(values):
  """Mean and standard deviation over training seeds (NaN: never solved)."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  return {'mean': float(np.mean(finite)) if finite.size else None,
          'std': float(np.std(finite)) if finite.size else None,
          'by_seed': [None if np.isnan(v) else float(v) for v in values]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise app.UsageError(f'--seeds must be integers, got {_SEEDS.value}')
  config = config_flags.config_from_flags()
  output_dir = _OUTPUT_DIR.value or f'runs/task_policy_{_DOMAIN.value}'
  demo_dir = _DEMO_DIR.value or os.path.join(output_dir, 'demos')
  domain = make_domain(_DOMAIN.value)
  task_seeds = list(range(_FIRST_TASK_SEED.value,
                          _FIRST_TASK_SEED.value + _NUM_TASK_EPISODES.value))
  try:
    train_demos, _ = demo_sets.prepare(domain, demo_dir,
                                       generate_if_absent=_DEMO_DIR.value is None,
                                       num_demos=_NUM_DEMOS.value)
    results = {agent: [] for agent in AGENTS}
    for seed in seeds:
      for agent in AGENTS:
        workdir = os.path.join(output_dir, f'{agent}_seed{seed}')
        training.run(training.TrainSettings(
            domain=domain.name, workdir=workdir, demo_dir=demo_dir, seed=seed,
            max_env_steps=_MAX_ENV_STEPS.value,
            eval_every_env_steps=_EVAL_EVERY.value, agent=agent), config)
        run = saved_runs.open_run(workdir)
        environment = run.builder.make_training_environment(train_demos, seed)
        policy = saved_runs.restore_policies(
            run, specs.make_environment_spec(environment))['task']
        steps = evaluation.task_policy_by_seed(policy, domain, task_seeds,
                                               config.action_repeat)
        results[agent].append(evaluation.summarize_task(steps))
        logging.info('%s seed %d: %s', agent, seed, results[agent][-1])
    demonstrator = evaluation.summarize_task(
        baselines.demonstrator_task_by_seed(domain, task_seeds))
  except (demonstrations.DemonstrationError, checkpointing.CheckpointError) as e:
    sys.exit('error: ' + '; '.join(line.strip() for line in str(e).splitlines()))

  report = {
      'domain': domain.name, 'training_seeds': seeds, 'task_seeds': task_seeds,
      'max_env_steps': _MAX_ENV_STEPS.value,
      **{agent: {key: _spread([r[key] for r in results[agent]])
                 for key in ('task_success', 'task_steps_to_success')}
         for agent in AGENTS},
      'demonstrators': {key: _spread([value]) for key, value in demonstrator.items()},
  }
  with open(os.path.join(output_dir, 'task_policy.json'), 'w') as f:
    json.dump(report, f, indent=2)
  plotting.plot_task_policy_comparison(report, os.path.join(output_dir, 'task_policy.png'))
  print(f'{"":14} {"success":>16} {"steps to success":>20}   '
        f'({len(seeds)} training seeds, {len(task_seeds)} task seeds, '
        f'{_MAX_ENV_STEPS.value} env steps)')
  for name in (*AGENTS, 'demonstrators'):
    cells = []
    for key in ('task_success', 'task_steps_to_success'):
      spread = report[name][key]
      cells.append('n/a' if spread['mean'] is None
                   else f"{spread['mean']:.2f} +- {spread['std']:.2f}")
    print(f'{name:14} {cells[0]:>16} {cells[1]:>20}')
  print(f'wrote {os.path.join(output_dir, "task_policy.json")} and task_policy.png')


if __name__ == '__main__':
  cli.run(main)
