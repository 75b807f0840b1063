"""experiments/ablate_network_size.py: a tiny ablation end to end (table, curves, plots),
resumed; bad flags."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'experiments', 'ablate_network_size.py')
TINY = ('--domains=point_mass', '--sizes=small', '--normalizations=none,layer',
        '--max_env_steps=200', '--eval_every_env_steps=200', '--num_demos=6',
        '--held_out_fraction=0.3', '--batch_size=8', '--min_replay_size=50',
        '--notrain_task_policy', '--seeds=0,1')


def _run(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        timeout=900, cwd=ROOT, check=False)


@pytest.mark.slow
def test_a_tiny_ablation_over_two_seeds_writes_its_table_and_plots_and_resumes(tmp_path):
  result = _run(*TINY, f'--output_dir={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'ablation.json') as f:
    table = json.load(f)
  cells = table['cells']
  assert [(c['domain'], c['size'], c['normalization'], c['seed']) for c in cells] == [
      ('point_mass', 'small', norm, seed)
      for seed in (0, 1) for norm in ('none', 'layer')]
  for cell in cells:
    assert 0.0 <= cell['untrained_reward'] <= 1.0
    assert 0.0 <= cell['final_reward'] <= cell['best_reward'] <= 1.0
    assert cell['env_steps'] >= 200 and cell['learner_steps'] > 0
    assert 'position_error_cm' in cell
    # Its evaluations, untrained first and the final one last, as the cell's log has them.
    curve = cell['curve']
    assert curve['env_steps'][0] == 0 and curve['learner_steps'][0] == 0
    assert curve['env_steps'] == sorted(curve['env_steps'])
    assert curve['env_steps'][-1] == cell['env_steps']
    assert curve['learner_steps'][-1] == cell['learner_steps']
    assert curve['imitation_reward'][0] == pytest.approx(cell['untrained_reward'])
    assert curve['imitation_reward'][-1] == pytest.approx(cell['final_reward'])
    assert curve['position_error_cm'][-1] == pytest.approx(cell['position_error_cm'])
    assert curve['wall_minutes'][-1] == pytest.approx(cell['wall_minutes'])
  # Each normalization over the two seeds: mean, min and max of the cells' figures, and
  # the mean curve evaluation by evaluation.
  for row, norm in zip(table['summary'], ('none', 'layer')):
    assert (row['size'], row['normalization'], row['seeds']) == ('small', norm, [0, 1])
    seeds = [c for c in cells if c['normalization'] == norm]
    finals = [c['final_reward'] for c in seeds]
    assert row['final_reward'] == pytest.approx(
        {'mean': sum(finals) / 2, 'min': min(finals), 'max': max(finals)})
    assert row['position_error_cm']['mean'] == pytest.approx(
        sum(c['position_error_cm'] for c in seeds) / 2)
    evaluations = min(len(c['curve']['env_steps']) for c in seeds)
    assert row['curve']['imitation_reward'] == pytest.approx(
        [sum(c['curve']['imitation_reward'][i] for c in seeds) / 2
         for i in range(evaluations)])
  # Baselines on each seed's held-out demos: the point mass's demonstrators replay their
  # demos exactly (reward 1 a step); standing still does not.
  for seed in ('0', '1'):
    baselines = table['baselines']['point_mass'][seed]
    assert baselines['demonstrator']['imitation_reward'] == pytest.approx(1.0)
    assert 0.0 <= baselines['zero_action']['imitation_reward'] < 0.5
    assert baselines['zero_action']['position_error_cm'] > 1.0
  for png in ('ablation.png', 'ablation_curves.png'):
    assert os.path.getsize(tmp_path / png) > 1000
  # A second run keeps the finished cells: no training, the same table.
  cell_files = [tmp_path / 'point_mass' / f'small_{n}_seed{seed}' / 'result.json'
                for seed in (0, 1) for n in ('none', 'layer')]
  mtimes = [os.path.getmtime(p) for p in cell_files]
  again = _run(*TINY, f'--output_dir={tmp_path}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert [os.path.getmtime(p) for p in cell_files] == mtimes
  with open(tmp_path / 'ablation.json') as f:
    assert json.load(f)['cells'] == cells


# Each case starts an interpreter (~5 s CPU); two are enough for the fast suite.
@pytest.mark.parametrize('flag, message', [
    ('--sizes=small,huge', "--sizes: unknown value 'huge'"),
    ('--normalization=layer', '--normalization: set per cell'),
    pytest.param('--normalizations=batch', "--normalizations: unknown value 'batch'",
                 marks=pytest.mark.slow),
    pytest.param('--domains=cartpole', "--domains: unknown value 'cartpole'",
                 marks=pytest.mark.slow),
    pytest.param('--seeds=0,one', '--seeds: integers, not 0,one', marks=pytest.mark.slow),
])
def test_bad_flags_fail_with_one_line_before_anything_runs(tmp_path, flag, message):
  output_dir = tmp_path / 'out'
  result = _run(f'--output_dir={output_dir}', flag)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
  assert not output_dir.exists()
