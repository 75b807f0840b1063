r"""Network size x normalization: held-out one-shot imitation fidelity per cell.

  python experiments/ablate_network_size.py --domains=point_mass,point_mass_pixels \
      --sizes=small,medium,large --normalizations=none,layer --seeds=0,1,2 \
      --max_env_steps=200000 --output_dir=runs/ablate_network_size

Every cell trains single-process (experiments/train.py's loop) with both torsos (policy
and critic) of one residual size and one normalization, on the same budget of env steps
(and, if given, wall minutes), then imitates every held-out demonstration once, beside
zero action and the demonstrators on the same demonstrations. The domain picks the
input: `point_mass` features, `point_mass_pixels` pixels (demos shown as camera frames),
`jaco_stack` features. Other agent flags (--preset, --batch_size, ...) apply to every
cell. Each seed records its own demos (once, into <output_dir>/demos/<domain>_seed<seed>)
and trains every cell once in <output_dir>/<domain>/<size>_<normalization>_seed<seed>: a
finished cell (its result.json) is kept, an unfinished one resumes from its checkpoint.
Writes ablation.json (every cell with its evaluations, and their mean, min and max over
the seeds), ablation.png (final rewards) and ablation_curves.png (held-out reward
against env steps and against minutes).
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
from metamimic_jax import flags as config_flags
from metamimic_jax import numerics
from metamimic_jax import plotting
from metamimic_jax import training
from metamimic_jax.builder import MetaMimicBuilder
from metamimic_jax.config import NORMALIZATIONS, TORSO_SIZES
from metamimic_jax.environments import DOMAIN_NAMES
from metamimic_jax.environments import make_domain

import dataclasses
import json

from absl import app
from absl import flags
from absl import logging
import numpy as np

_DOMAINS = flags.DEFINE_list('domains', ['point_mass', 'point_mass_pixels'],
                             f'Domains (inputs): any of {", ".join(DOMAIN_NAMES)}.')
_SIZES = flags.DEFINE_list('sizes', list(TORSO_SIZES), 'Residual torso sizes.')
_NORMALIZATIONS = flags.DEFINE_list('normalizations', ['none', 'layer'],
                                    'Normalizations.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs/ablate_network_size',
                                  'Cells, demos and results.')
_NUM_DEMOS = flags.DEFINE_integer('num_demos', 200, 'Demos to record per domain on '
                                  'first use; the successful ones are kept.',
                                  lower_bound=2)
_HELD_OUT_FRACTION = flags.DEFINE_float(
    'held_out_fraction', 0.1, 'Fraction of the kept demos held out for evaluation.',
    lower_bound=0, upper_bound=1)
_MAX_ENV_STEPS = flags.DEFINE_integer('max_env_steps', 200_000,
                                      'Env steps each cell trains for.', lower_bound=1)
_MAX_WALL_MINUTES = flags.DEFINE_float('max_wall_minutes', 0.0, 'Wall minutes each '
                                       'cell trains for at most (0: no limit).',
                                       lower_bound=0)
_EVAL_EVERY = flags.DEFINE_integer('eval_every_env_steps', 20_000,
                                   'Env steps between evaluations.', lower_bound=1)
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds: each records its own demos and '
                           'trains every cell once with its own environments and '
                           'networks.')

RESULT_FILE = 'result.json'
_TRACKING_ERROR_UNITS = ('_cm', '_rad')  # Suffixes of domains' tracking error names.
_PER_CELL_FLAGS = ('policy_torso', 'critic_torso', 'normalization')


def _choices(flag, allowed):
  """The flag's values, each checked against `allowed` (UsageError naming it)."""
  for value in flag.value:
    if value not in allowed:
      raise app.UsageError(f'--{flag.name}: unknown value {value!r}; choose from '
                           f'{", ".join(allowed)}')
  if not flag.value:
    raise app.UsageError(f'--{flag.name} needs at least one value')
  return list(dict.fromkeys(flag.value))


def _seeds():
  try:
    seeds = [int(seed) for seed in _SEEDS.value]
  except ValueError:
    raise app.UsageError(f'--seeds: integers, not {",".join(_SEEDS.value)}') from None
  if not seeds:
    raise app.UsageError('--seeds needs at least one value')
  return list(dict.fromkeys(seeds))


def held_out_baselines(domain, config, held_out, seed):
  """Zero action and the demonstrators on the held-out demos. They act every frame (the
  demonstrators do), so their rewards are per-frame means."""
  environment = MetaMimicBuilder(dataclasses.replace(config, action_repeat=1),
                                 domain).make_demo_environment(held_out, seed + 1)
  return {'zero_action': baselines.zero_action_imitation(environment),
          'demonstrator': baselines.demonstrator_imitation(domain, environment)}


def cell_curve(cell_dir):
  """A cell's held-out evaluations: lists of env and learner steps, minutes, reward and
  tracking errors."""
  curve = training.evaluation_curve(cell_dir)
  # Each (resumed) run's clock starts at 0: add up the time between its evaluations.
  minutes = np.cumsum(np.diff(curve['wall_minutes'], prepend=0).clip(min=0))
  return {'env_steps': curve['actor_steps'].astype(int).tolist(),
          'learner_steps': curve['learner_steps'].astype(int).tolist(),
          'wall_minutes': minutes.tolist(),
          'imitation_reward': curve['imitation_reward'].tolist(),
          **{key: values.tolist() for key, values in curve.items()
             if key.endswith(_TRACKING_ERROR_UNITS)}}


def run_cell(domain_name, size, normalization, seed, config, demo_dir, cell_dir):
  """Trains one cell (or resumes it) and returns its result, saved in RESULT_FILE, with
  its curve (read from the cell's log, not saved twice)."""
  path = os.path.join(cell_dir, RESULT_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return {**json.load(f), 'curve': cell_curve(cell_dir)}
  cell_config = dataclasses.replace(config, policy_torso=size, critic_torso=size,
                                    normalization=normalization)
  final = training.run(training.TrainSettings(
      domain=domain_name, workdir=cell_dir, demo_dir=demo_dir, seed=seed,
      max_env_steps=_MAX_ENV_STEPS.value, max_wall_minutes=_MAX_WALL_MINUTES.value,
      eval_every_env_steps=_EVAL_EVERY.value), cell_config)
  curve = cell_curve(cell_dir)
  result = {
      'domain': domain_name, 'size': size, 'normalization': normalization,
      'final_reward': final['imitation_reward'],
      'best_reward': float(np.max(curve['imitation_reward'])),
      'untrained_reward': float(curve['imitation_reward'][0]),
      'env_steps': int(final['actor_steps']),
      'learner_steps': int(final['learner_steps']),
      'wall_minutes': curve['wall_minutes'][-1],
      **{k: v for k, v in final.items() if k.endswith(_TRACKING_ERROR_UNITS)},
  }
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  return {**result, 'curve': curve}


def _spread(values):
  return {'mean': float(np.mean(values)), 'min': float(np.min(values)),
          'max': float(np.max(values))}


def summarize(cells):
  """Each (domain, size, normalization) over its seeds: final, untrained reward and
  tracking errors as mean, min and max; steps and minutes as means; and the mean curve,
  evaluation by evaluation (over the evaluations every seed reached)."""
  groups = {}
  for cell in cells:
    groups.setdefault((cell['domain'], cell['size'], cell['normalization']),
                      []).append(cell)
  rows = []
  for (domain_name, size, normalization), group in groups.items():
    evaluations = min(len(cell['curve']['env_steps']) for cell in group)
    rows.append({
        'domain': domain_name, 'size': size, 'normalization': normalization,
        'seeds': [cell['seed'] for cell in group],
        **{key: _spread([cell[key] for cell in group]) for key in group[0]
           if key in ('final_reward', 'untrained_reward')
           or key.endswith(_TRACKING_ERROR_UNITS)},
        **{key: float(np.mean([cell[key] for cell in group]))
           for key in ('env_steps', 'learner_steps', 'wall_minutes')},
        'curve': {key: np.mean([cell['curve'][key][:evaluations] for cell in group],
                               axis=0).tolist() for key in group[0]['curve']},
    })
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  domains = _choices(_DOMAINS, DOMAIN_NAMES)
  sizes = _choices(_SIZES, list(TORSO_SIZES))
  norms = _choices(_NORMALIZATIONS, NORMALIZATIONS)
  seeds = _seeds()
  given = [name for name in _PER_CELL_FLAGS if flags.FLAGS[name].present]
  if given:
    raise app.UsageError(f'--{", --".join(given)}: set per cell by --sizes and '
                         '--normalizations')
  config = config_flags.config_from_flags()
  output_dir = _OUTPUT_DIR.value
  cells, seed_baselines = [], {}
  try:
    for domain_name in domains:
      domain = make_domain(domain_name)
      seed_baselines[domain_name] = {}
      for seed in seeds:
        demo_dir = os.path.join(output_dir, 'demos', f'{domain_name}_seed{seed}')
        _, held_out = demo_sets.prepare(
            domain, demo_dir, generate_if_absent=True, num_demos=_NUM_DEMOS.value,
            held_out_fraction=_HELD_OUT_FRACTION.value, seed=seed)
        seed_baselines[domain_name][str(seed)] = held_out_baselines(domain, config,
                                                                     held_out, seed)
        for size in sizes:
          for norm in norms:
            cell_dir = os.path.join(output_dir, domain_name, f'{size}_{norm}_seed{seed}')
            result = run_cell(domain_name, size, norm, seed, config, demo_dir, cell_dir)
            logging.info('cell %s: final reward %.3f', cell_dir, result['final_reward'])
            cells.append({**result, 'seed': seed})
  except (OSError, demonstrations.DemonstrationError, checkpointing.CheckpointError,
          numerics.NonFiniteError) as e:
    sys.exit('error: ' + '; '.join(line.strip() for line in str(e).splitlines()))

  summary = summarize(cells)
  # Each baseline's imitation reward, averaged over the seeds' held-out demos.
  mean_baselines = {
      domain_name: {name: float(np.mean([baseline[name]['imitation_reward']
                                         for baseline in by_seed.values()]))
                    for name in next(iter(by_seed.values()))}
      for domain_name, by_seed in seed_baselines.items()}
  with open(os.path.join(output_dir, 'ablation.json'), 'w') as f:
    json.dump({'max_env_steps': _MAX_ENV_STEPS.value,
               'max_wall_minutes': _MAX_WALL_MINUTES.value, 'seeds': seeds,
               'config': repr(config), 'baselines': seed_baselines,
               'summary': summary, 'cells': cells}, f, indent=2)
  plotting.plot_network_size_ablation(summary, mean_baselines,
                                      os.path.join(output_dir, 'ablation.png'))
  plotting.plot_network_size_curves(cells, summary, mean_baselines,
                                    os.path.join(output_dir, 'ablation_curves.png'))
  print(f'{"domain":18} {"size":7} {"norm":6} {"final (min-max)":>20} '
        f'{"untrained":>9} {"env steps":>9} {"minutes":>7} seeds')
  for row in summary:
    final = row['final_reward']
    print(f'{row["domain"]:18} {row["size"]:7} {row["normalization"]:6} '
          f'{final["mean"]:6.3f} ({final["min"]:.3f}-{final["max"]:.3f}) '
          f'{row["untrained_reward"]["mean"]:9.3f} {row["env_steps"]:9.0f} '
          f'{row["wall_minutes"]:7.1f} {len(row["seeds"])}')
  for domain_name, values in mean_baselines.items():
    print(f'{domain_name}, held out: zero action {values["zero_action"]:.3f}, '
          f'demonstrator {values["demonstrator"]:.3f}')
  print(f'wrote {os.path.join(output_dir, "ablation.json")}, ablation.png and '
        'ablation_curves.png')


if __name__ == '__main__':
  cli.run(main)
