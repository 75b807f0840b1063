"""experiments/evaluate.py end to end on a tiny run's checkpoint, and its bad input."""

import dataclasses
import json
import os
import subprocess
import sys

from absl import flags
import pytest

from metamimic_jax import checkpointing
from metamimic_jax import demonstrations
from metamimic_jax import videos
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'experiments', 'evaluate.py')
DEMO_FRAMES = 12  # Short demos keep the rendering (~0.2 s a frame on a CPU) quick.


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A tiny point-mass run of experiments/train.py's loop: a handful of learner steps."""
  workdir = tmp_path_factory.mktemp('run')
  helpers.tiny_point_mass_run(workdir, DEMO_FRAMES)
  return workdir


def _evaluate(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        timeout=300, cwd=ROOT)


def test_evaluates_a_checkpoint_end_to_end(run_dir, tmp_path):
  output = tmp_path / 'out'
  result = _evaluate(f'--workdir={run_dir}', f'--demos={run_dir}/demos/held_out.h5',
                     f'--output_dir={output}', '--num_task_episodes=2', '--video_size=16')
  assert result.returncode == 0, result.stderr[-2000:]
  assert os.listdir(tmp_path) == ['out']  # No staging directory left behind.
  report = json.loads((output / 'evaluation.json').read_text())
  rewards = [row['reward'] for row in report['imitation_per_demo']]
  assert len(rewards) == 3
  assert report['imitation']['imitation_reward'] == pytest.approx(sum(rewards) / 3)
  assert report['task_policy']['steps_to_success_by_seed'].__len__() == 2
  assert len(report['demonstrators']['steps_to_success_by_seed']) == 2
  rows = (output / 'imitations.csv').read_text().splitlines()
  assert rows[0].startswith('demo,seed,length,imitation_reward,position_error_cm')
  assert len(rows) == 4
  # Best, median and worst: three different demos, rewards in that order.
  ranked = report['videos']
  assert [ranked[r]['reward'] for r in ('best', 'median', 'worst')] == sorted(
      rewards, reverse=True)
  for rank in ('best', 'median', 'worst'):
    frames = videos.read_mp4(str(output / f'{rank}.mp4'))
    assert frames.shape == (DEMO_FRAMES, 16 + 8, 32, 3)  # One frame per demo frame.
    assert os.path.getsize(output / f'{rank}_strip.png') > 100
  for png in ('per_step.png', 'trajectories.png'):
    assert os.path.getsize(output / png) > 1000
  # Where the error sits: tenths of the demos, and the demos shifted; unshifted, the
  # error is the summary's.
  assert len(report['imitation_errors_by_phase']['position_error_cm']) == 10
  by_offset = report['imitation_errors_by_frame_offset']
  assert by_offset['0']['position_error_cm'] == pytest.approx(
      report['imitation']['position_error_cm'])
  assert 'position_error_cm by tenth of the demos:' in result.stdout


def test_without_videos_renders_nothing(run_dir, tmp_path):
  output = tmp_path / 'out'
  result = _evaluate(f'--workdir={run_dir}', f'--demos={run_dir}/demos/held_out.h5',
                     f'--output_dir={output}', '--num_task_episodes=1', '--novideos')
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads((output / 'evaluation.json').read_text())['videos'] == {}
  assert not [f for f in os.listdir(output) if f.endswith(('.mp4', '_strip.png'))]
  assert (output / 'per_step.png').exists()


def _one_line_error(result, *names):
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith('error: '), result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  for name in names:
    assert str(name) in lines[-1]


class _Nothing:
  def save(self):
    return {}


def _bad_cases(run_dir, tmp_path):
  """(arguments, strings the error names): one bad input each, the rest good."""
  held_out = f'{run_dir}/demos/held_out.h5'
  other_domain = tmp_path / 'jaco.h5'
  demonstrations.save(str(other_domain), helpers.point_mass_demos(1), 'jaco_stack')
  wrong_shape = tmp_path / 'wide.h5'
  demo = helpers.point_mass_demos(1)[0]
  demonstrations.save(str(wrong_shape), [dataclasses.replace(demo, observations={
      **demo.observations, 'position': demo.observations['velocity'][:, :1]})],
                      'point_mass')
  incompatible = tmp_path / 'incompatible'
  checkpointing.Checkpointer(str(incompatible / 'checkpoints'), {'learner': _Nothing()},
                             {'domain': 'point_mass', 'no_such_field': '1'}).save(True)
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  return [
      ([f'--workdir={tmp_path}/empty', f'--demos={held_out}'],
       [f'{tmp_path}/empty', 'no checkpoint']),
      ([f'--workdir={incompatible}', f'--demos={held_out}'], ['no_such_field']),
      ([f'--workdir={run_dir}', f'--demos={other_domain}'], [other_domain, 'jaco_stack']),
      ([f'--workdir={run_dir}', f'--demos={wrong_shape}'], [wrong_shape, 'position']),
      ([f'--workdir={run_dir}', f'--demos={tmp_path}/missing.h5'], ['missing.h5']),
      ([f'--workdir={run_dir}', f'--demos={held_out}', f'--output_dir={a_file}/out'],
       [f'{a_file}/out', 'cannot write']),
  ]


def test_bad_input_gives_one_line_and_writes_nothing(run_dir, tmp_path):
  cases = _bad_cases(run_dir, tmp_path)
  before = sorted(os.listdir(tmp_path))
  # One case through a real process (exit status, stderr), the rest in this process.
  arguments, names = cases[-1]
  _one_line_error(_evaluate(*arguments), *names)
  sys.path.insert(0, os.path.dirname(SCRIPT))
  import evaluate  # pylint: disable=g-import-not-at-top
  for arguments, names in cases[:-1]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['evaluate.py', *arguments, f'--output_dir={tmp_path}/out'])
    with pytest.raises(SystemExit) as exit_info:
      evaluate.main(['evaluate.py'])
    message = str(exit_info.value.code)
    assert message.startswith('error: ') and '\n' not in message, message
    for name in names:
      assert str(name) in message
  assert sorted(os.listdir(tmp_path)) == before  # Nothing written, nothing left.
