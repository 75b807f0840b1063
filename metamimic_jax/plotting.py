"""Plots people would rather look at than read: learning curves and imitations."""

import csv
import os
from typing import Mapping, Sequence

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from metamimic_jax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from metamimic_jax import keys  # pylint: disable=g-import-not-at-top,wrong-import-position
from metamimic_jax.environments import base  # pylint: disable=g-import-not-at-top,wrong-import-position


def read_csv(path: str):
  with open(path) as f:
    rows = list(csv.DictReader(f))
  return {k: np.array([float(r[k]) if r[k] not in ('', None) else np.nan for r in rows])
          for k in rows[0]} if rows else {}


def plot_learning_curve(eval_csv: str, png: str,
                        keys: Sequence[str] = ('imitation_reward', 'task_success')) -> None:
  """Held-out imitation reward (and task success) against actor steps."""
  if not os.path.exists(eval_csv):
    return
  data = read_csv(eval_csv)
  keys = [k for k in keys if k in data]
  if not keys:
    return
  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
  for ax, key in zip(axes[0], keys):
    order = np.argsort(data['actor_steps'])
    ax.plot(data['actor_steps'][order], data[key][order], marker='.')
    ax.set_xlabel('actor steps')
    ax.set_ylabel(key)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
  axes[0][0].axhline(1.0, color='gray', linestyle='--', label='demonstrator')
  axes[0][0].legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)


def plot_imitation_benchmark(curve: Mapping[str, np.ndarray], png: str,
                             baselines: Mapping[str, Mapping[str, float]],
                             error_keys: Sequence[str]) -> None:
  """Held-out imitation reward against env steps and minutes, and tracking errors.

  `curve` holds evaluator columns (actor_steps, wall_minutes, imitation_reward and the
  `error_keys`); each baseline's values are drawn as dashed lines where it has them.
  """
  panels = [('actor_steps', 'imitation_reward'), ('wall_minutes', 'imitation_reward')]
  panels += [('actor_steps', key) for key in error_keys]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), squeeze=False)
  for ax, (x_key, y_key) in zip(axes[0], panels):
    ax.plot(curve[x_key], curve[y_key], marker='.', label='MetaMimic (held out)')
    for i, (name, values) in enumerate(baselines.items()):
      if y_key in values:
        ax.axhline(values[y_key], color=f'C{i + 1}', linestyle='--', label=name)
    ax.set_xlabel('env steps' if x_key == 'actor_steps' else 'minutes')
    if x_key == 'actor_steps':
      ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f'{x / 1e3:.0f}k'))
    ax.set_ylabel(y_key)
    if y_key == 'imitation_reward':
      ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
  axes[0][0].legend(loc='best', fontsize=8)
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)


def plot_imitations(actor, environment: base.DemoConditionedEnvironment, png: str,
                    key: str, num_demos: int = 4) -> None:
  """Agent (solid) against demonstration (dashed) for the first features of `key`."""
  num_demos = min(num_demos, environment.num_demonstrations)
  fig, axes = plt.subplots(1, num_demos, figsize=(3.5 * num_demos, 3.5), squeeze=False)
  for index, ax in enumerate(axes[0]):
    environment.select_demonstration(index)
    timesteps = base.run_episode(environment, evaluation.actor_policy(actor))
    agent = np.stack([ts.observation[keys.OBSERVATION][key] for ts in timesteps])
    demo = environment.demonstration.observations[key]
    reward = np.mean([ts.reward[keys.IMITATION] for ts in timesteps[1:]])
    agent, demo = agent.reshape(len(agent), -1), demo.reshape(len(demo), -1)
    if agent.shape[1] >= 2:
      ax.plot(demo[:, 0], demo[:, 1], 'k--', label='demonstration')
      ax.plot(agent[:, 0], agent[:, 1], 'C0', label='imitation')
      ax.plot(demo[0, 0], demo[0, 1], 'ko')
      ax.set_aspect('equal', adjustable='datalim')
    else:
      ax.plot(demo[:, 0], 'k--', label='demonstration')
      ax.plot(agent[:, 0], 'C0', label='imitation')
    ax.set_title(f'held-out demo {index}: reward {reward:.2f}')
  axes[0][0].legend(loc='best', fontsize=8)
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)


def plot_imitation_steps(imitations: Sequence[evaluation.Imitation], png: str) -> None:
  """Imitation reward and each tracking error against the step, one thin line a demo
  and their mean (over the demos still running at that step)."""
  series = [('imitation reward', [i.imitation_rewards for i in imitations])]
  series += [(name, [i.tracking_errors[name] for i in imitations])
             for name in imitations[0].tracking_errors]
  fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.5),
                           squeeze=False)
  for ax, (name, values) in zip(axes[0], series):
    for value in values:
      ax.plot(np.arange(1, len(value) + 1), value, color='C0', alpha=0.25, lw=0.8)
    longest = max(len(value) for value in values)
    padded = np.full((len(values), longest), np.nan)
    for row, value in zip(padded, values):
      row[:len(value)] = value
    ax.plot(np.arange(1, longest + 1), np.nanmean(padded, axis=0), color='k',
            label='mean over demos')
    ax.set_xlabel('step')
    ax.set_ylabel(name)
    if name == 'imitation reward':
      ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
  axes[0][0].legend(loc='best', fontsize=8)
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)


def plot_trajectory_overlay(imitations: Mapping[str, evaluation.Imitation],
                            environment: base.DemoConditionedEnvironment, key: str,
                            png: str) -> None:
  """Imitation (solid) over demonstration (dashed) of the first two features of `key`,
  one panel per named imitation (e.g. best, median, worst)."""
  fig, axes = plt.subplots(1, len(imitations), figsize=(3.5 * len(imitations), 3.5),
                           squeeze=False)
  for ax, (label, imitation) in zip(axes[0], imitations.items()):
    demo = environment.demonstrations[imitation.demo_index].observations[key]
    agent = imitation.observations[key]
    demo, agent = demo.reshape(len(demo), -1), agent.reshape(len(agent), -1)
    if agent.shape[1] >= 2:
      ax.plot(demo[:, 0], demo[:, 1], 'k--', label='demonstration')
      ax.plot(agent[:, 0], agent[:, 1], 'C0', label='imitation')
      ax.plot(demo[0, 0], demo[0, 1], 'ko')
      ax.set_aspect('equal', adjustable='datalim')
    else:
      ax.plot(demo[:, 0], 'k--', label='demonstration')
      ax.plot(agent[:, 0], 'C0', label='imitation')
    ax.set_title(f'{label}: demo {imitation.demo_index}, reward {imitation.reward:.2f}',
                 fontsize=9)
  axes[0][0].legend(loc='best', fontsize=8)
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)


def plot_task_policy_comparison(report: Mapping[str, Mapping], png: str) -> None:
  """Success rate and steps to first success per agent: means over training seeds with
  their standard deviation (a `task_policy.py` report)."""
  names = [name for name in ('metamimic', 'task_only', 'demonstrators') if name in report]
  fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
  for ax, key in zip(axes, ('task_success', 'task_steps_to_success')):
    means = [report[name][key]['mean'] for name in names]
    stds = [report[name][key]['std'] for name in names]
    ax.bar(names, [np.nan if m is None else m for m in means],
           yerr=[0 if s is None else s for s in stds], capsize=4,
           color=[f'C{i}' for i in range(len(names))])
    ax.set_ylabel(key.replace('_', ' '))
    ax.grid(alpha=0.3, axis='y')
  axes[0].set_ylim(0, 1.05)
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)


def _draw_baselines(ax, domain_baselines: Mapping[str, float]) -> None:
  """Each baseline's imitation reward as a horizontal line: zero action, demonstrator."""
  for (name, reward), style in zip(domain_baselines.items(), (':', '-.')):
    ax.axhline(reward, color='gray', linestyle=style, label=name.replace('_', ' '))


def plot_network_size_ablation(summary: Sequence[Mapping],
                               baselines: Mapping[str, Mapping[str, float]],
                               png: str) -> None:
  """Held-out imitation reward by torso size (x) and normalization (bars), one panel a
  domain: the mean over seeds, its min to max as an error bar, the mean untrained
  reward as a black tick, the domain's baselines as gray lines.

  `summary`: dicts with domain, size, normalization, final_reward (mean, min, max) and
  untrained_reward (mean). `baselines`: by domain, by name (zero_action, demonstrator),
  its imitation reward.
  """
  domains = list(dict.fromkeys(row['domain'] for row in summary))
  sizes = list(dict.fromkeys(row['size'] for row in summary))
  norms = list(dict.fromkeys(row['normalization'] for row in summary))
  width = 0.8 / len(norms)
  fig, axes = plt.subplots(1, len(domains), figsize=(1.5 + 2 * len(sizes) * len(domains),
                                                     3.5), squeeze=False)
  for ax, domain in zip(axes[0], domains):
    for row in summary:
      if row['domain'] != domain:
        continue
      i, j = sizes.index(row['size']), norms.index(row['normalization'])
      x = i + (j - (len(norms) - 1) / 2) * width
      final = row['final_reward']
      ax.bar(x, final['mean'], width, color=f'C{j}', label=row['normalization'],
             yerr=[[final['mean'] - final['min']], [final['max'] - final['mean']]],
             capsize=3)
      ax.plot([x - width / 2, x + width / 2], [row['untrained_reward']['mean']] * 2,
              color='black')
    _draw_baselines(ax, baselines[domain])
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels(sizes)
    ax.set_ylim(0, 1.05)
    ax.set_title(domain)
    ax.set_ylabel('held-out imitation reward')
    ax.grid(alpha=0.3, axis='y')
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), title='normalization', loc='upper left',
              fontsize=8)
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)


def plot_network_size_curves(cells: Sequence[Mapping], summary: Sequence[Mapping],
                             baselines: Mapping[str, Mapping[str, float]],
                             png: str) -> None:
  """Held-out imitation reward against env steps (top) and wall minutes (bottom), one
  column a domain: a colour a torso size, a line style a normalization; each seed thin,
  their mean thick; the domain's baselines in gray.

  `cells` (one a seed) and `summary` (their means): dicts with domain, size,
  normalization and a curve (env_steps, wall_minutes, imitation_reward lists).
  `baselines`: as `plot_network_size_ablation`'s.
  """
  domains = list(dict.fromkeys(row['domain'] for row in summary))
  sizes = list(dict.fromkeys(row['size'] for row in summary))
  norms = list(dict.fromkeys(row['normalization'] for row in summary))
  styles = ('-', '--', ':', '-.')

  def style(row):
    return {'color': f'C{sizes.index(row["size"])}',
            'linestyle': styles[norms.index(row['normalization']) % len(styles)]}

  fig, axes = plt.subplots(2, len(domains), figsize=(5 * len(domains), 6.5),
                           squeeze=False)
  for column, domain in enumerate(domains):
    for line, x_key in enumerate(('env_steps', 'wall_minutes')):
      ax = axes[line][column]
      for cell in cells:
        if cell['domain'] == domain:
          ax.plot(cell['curve'][x_key], cell['curve']['imitation_reward'], alpha=0.3,
                  linewidth=0.8, **style(cell))
      for row in summary:
        if row['domain'] == domain:
          ax.plot(row['curve'][x_key], row['curve']['imitation_reward'], marker='.',
                  label=f'{row["size"]}, {row["normalization"]}', **style(row))
      _draw_baselines(ax, baselines[domain])
      ax.set_xlabel('env steps' if x_key == 'env_steps' else 'minutes')
      if x_key == 'env_steps':
        ax.xaxis.set_major_formatter(
            ticker.FuncFormatter(lambda x, _: f'{x / 1e3:.0f}k'))
      ax.set_ylabel('held-out imitation reward')
      ax.set_ylim(0, 1.05)
      ax.grid(alpha=0.3)
    axes[0][column].set_title(domain)
    axes[0][column].legend(title='size, normalization', loc='upper left', fontsize=8)
  fig.tight_layout()
  fig.savefig(png, dpi=80)
  plt.close(fig)
