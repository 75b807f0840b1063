r"""Evaluates a trained run's checkpoint: one-shot imitation of a demo file, the task
policy on fresh episodes, plots and videos.

  python experiments/evaluate.py --workdir=runs/point_mass \
      --demos=runs/point_mass/demos/held_out.h5

Restores the learner's parameters (no replay) from a run of experiments/train.py or of
the Launchpad program; the domain and agent config come from the checkpoint. Without
noise, it imitates every demo in --demos once and runs the task policy and the
demonstrators on the same fresh seeds. Writes to --output_dir (default
<workdir>/evaluation): evaluation.json, imitations.csv (one row a demo), PNG plots
(reward and tracking errors per step, trajectory overlay), and for the best, the median
and the worst imitation an MP4 (demonstration left, imitation right, the per-step
imitation reward under them) and a PNG strip of its frames (`--novideos`: none). It
also says where the tracking errors sit: their means in each tenth of the demos, and
against the demos shifted by a few frames (a lagging imitation scores best at a
negative shift, a biased one at none). Everything is written to a
temporary directory beside the output and renamed into place at the end.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import baselines
from metamimic_jax import checkpointing
from metamimic_jax import cli
from metamimic_jax import demonstrations
from metamimic_jax import evaluation
from metamimic_jax import plotting
from metamimic_jax import saved_runs
from metamimic_jax import videos

import csv
import json
import shutil
import tempfile

from absl import app
from absl import flags
from acme import specs
import imageio
import numpy as np
import tqdm

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run to evaluate (its checkpoints).',
                               required=True)
_DEMOS = flags.DEFINE_string('demos', None, 'HDF5 demonstrations to imitate, e.g. the '
                             "run's demos/held_out.h5.", required=True)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Where to write (default: <workdir>/evaluation).')
_NUM_TASK_EPISODES = flags.DEFINE_integer(
    'num_task_episodes', 10, 'Fresh task episodes (seeds) for the task policy and the '
    'demonstrators.', lower_bound=1)
_FIRST_TASK_SEED = flags.DEFINE_integer(
    'first_task_seed', 1_000_000, 'Seed of the first fresh task episode (away from the '
    'seeds demos are recorded with).', lower_bound=0)
_VIDEO_SIZE = flags.DEFINE_integer('video_size', 64, 'Height and width of each video '
                                   'pane (even); rendering is slow on a CPU.',
                                   lower_bound=16)
_STRIP_FRAMES = flags.DEFINE_integer('strip_frames', 6, 'Frames in each PNG strip.',
                                     lower_bound=2)

_VIDEOS = flags.DEFINE_bool('videos', True, 'Render the MP4s and PNG strips (slow on a '
                             'CPU: Jaco renders ~5 frames/s).')

_VIDEO_RANKS = ('best', 'median', 'worst')
# Where the tracking error sits: tenths of the demos, and the demo shifted by some frames.
_NUM_PHASES = 10
_FRAME_OFFSETS = (-16, -8, -4, -2, 0, 2, 4, 8)
EVALUATION_FILE = 'evaluation.json'


class OutputError(Exception):
  """The output directory cannot be written; the message says which and why."""


def _staging_directory(output_dir: str) -> str:
  """A fresh temporary directory beside `output_dir`, which it will be renamed to."""
  output_dir = os.path.abspath(output_dir)
  if os.path.exists(output_dir) and os.listdir(output_dir) and not os.path.isfile(
      os.path.join(output_dir, EVALUATION_FILE)):
    raise OutputError(f'{output_dir}: exists and is not an evaluation output; '
                      'give another --output_dir')
  try:
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(output_dir)}.',
                               dir=os.path.dirname(output_dir))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename.
    return staging
  except OSError as e:
    raise OutputError(f'{output_dir}: cannot write there ({e.strerror})') from e


def _move_into_place(staging: str, output_dir: str) -> None:
  """Renames `staging` to `output_dir`, replacing an earlier evaluation there."""
  output_dir = os.path.abspath(output_dir)
  previous = None
  if os.path.exists(output_dir):
    previous = tempfile.mkdtemp(prefix=f'.{os.path.basename(output_dir)}.old.',
                                dir=os.path.dirname(output_dir))
    os.replace(output_dir, previous)
  os.replace(staging, output_dir)
  if previous:
    shutil.rmtree(previous)


def _without_nan(tree):
  """`tree` with NaN (no success to average) as None: JSON has no NaN."""
  if isinstance(tree, dict):
    return {k: _without_nan(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return [_without_nan(v) for v in tree]
  return None if isinstance(tree, float) and np.isnan(tree) else tree


def _rank(imitations):
  """The best, the median and the worst imitation by reward, each demo once."""
  order = sorted(imitations, key=lambda imitation: -imitation.reward)
  ranked = {}
  for rank, imitation in zip(_VIDEO_RANKS, (order[0], order[len(order) // 2], order[-1])):
    if imitation.demo_index not in [i.demo_index for i in ranked.values()]:
      ranked[rank] = imitation
  return ranked


def _write_csv(path, imitations, environment):
  error_names = list(imitations[0].tracking_errors)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['demo', 'seed', 'length', 'imitation_reward', *error_names,
                     'task_return', 'task_success', 'final_task_success'])
    for imitation in imitations:
      demo = environment.demonstrations[imitation.demo_index]
      writer.writerow([imitation.demo_index, demo.seed, demo.length,
                       f'{imitation.reward:.6f}',
                       *[f'{np.mean(imitation.tracking_errors[n]):.6f}'
                         for n in error_names],
                       f'{np.sum(imitation.task_rewards):g}',
                       int(np.sum(imitation.task_rewards) > 0),
                       int(imitation.task_rewards[-1] > 0)])


def evaluate(workdir: str, demos_path: str, output_dir: str) -> dict:
  """Writes the evaluation of `workdir`'s run on `demos_path` to `output_dir`."""
  run = saved_runs.open_run(workdir)
  if run.builder.task_only:
    raise checkpointing.CheckpointError(
        f'{run.checkpoint_directory}: a task-only run has no imitation policy; '
        'experiments/task_policy.py evaluates its task policy')
  environment = saved_runs.demo_environment(run, demos_path)
  demos = environment.demonstrations
  staging = _staging_directory(output_dir)
  try:
    policies = saved_runs.restore_policies(run, specs.make_environment_spec(environment))
    seeds = list(range(_FIRST_TASK_SEED.value,
                       _FIRST_TASK_SEED.value + _NUM_TASK_EPISODES.value))
    with tqdm.tqdm(total=len(demos) + 2 * len(seeds), desc='evaluating',
                   unit='episode') as progress:
      imitations = []
      for index in range(len(demos)):
        imitations.append(evaluation.imitate(policies['imitation'], environment, index))
        progress.update()
      task_policy = None
      if 'task' in policies:
        task_policy = evaluation.task_policy_by_seed(
            policies['task'], run.domain, seeds, run.builder.config.action_repeat)
      progress.update(len(seeds))
      demonstrator = baselines.demonstrator_task_by_seed(run.domain, seeds)
      progress.update(len(seeds))
    ranked = _rank(imitations)
    rendered = ranked if _VIDEOS.value else {}
    report = {
        'workdir': os.path.abspath(workdir),
        'checkpoint_directory': os.path.abspath(run.checkpoint_directory),
        'domain': run.domain.name,
        'demos': os.path.abspath(demos_path),
        'imitation': evaluation.summarize_imitations(imitations),
        'imitation_errors_by_phase': {
            name: errors.tolist() for name, errors in
            evaluation.errors_by_phase(imitations, _NUM_PHASES).items()},
        'imitation_errors_by_frame_offset': {
            str(offset): errors for offset, errors in evaluation.errors_by_frame_offset(
                imitations, environment, _FRAME_OFFSETS).items()},
        'imitation_per_demo': [
            {'demo': i.demo_index, 'seed': demos[i.demo_index].seed, 'reward': i.reward}
            for i in imitations],
        'task_seeds': seeds,
        'task_policy': (None if task_policy is None else
                        {**evaluation.summarize_task(task_policy),
                         'steps_to_success_by_seed': task_policy}),
        'demonstrators': {**evaluation.summarize_task(demonstrator),
                          'steps_to_success_by_seed': demonstrator},
        'videos': {rank: {'demo': i.demo_index, 'reward': i.reward,
                          'video': f'{rank}.mp4', 'strip': f'{rank}_strip.png'}
                   for rank, i in rendered.items()},
    }
    _write_csv(os.path.join(staging, 'imitations.csv'), imitations, environment)
    plotting.plot_imitation_steps(imitations, os.path.join(staging, 'per_step.png'))
    plotting.plot_trajectory_overlay(ranked, environment, run.domain.trajectory_key,
                                     os.path.join(staging, 'trajectories.png'))
    size = 2 * (_VIDEO_SIZE.value // 2)
    frames_total = sum(2 * demos[i.demo_index].length for i in rendered.values())
    with tqdm.tqdm(total=frames_total, desc='rendering videos', unit='frame',
                   disable=not rendered) as progress:
      for rank, imitation in rendered.items():
        index = imitation.demo_index
        demo_frames = videos.rendered_episode(
            environment, index, videos.demonstrator_policy(environment, index), size,
            progress.update)
        imitation_frames = videos.rendered_episode(
            environment, index, evaluation.actor_policy(policies['imitation']), size,
            progress.update)
        videos.write_mp4(os.path.join(staging, f'{rank}.mp4'), videos.compose(
            demo_frames, imitation_frames, imitation.imitation_rewards))
        imageio.imwrite(os.path.join(staging, f'{rank}_strip.png'), videos.frame_strip(
            demo_frames, imitation_frames, _STRIP_FRAMES.value))
    with open(os.path.join(staging, EVALUATION_FILE), 'w') as f:
      json.dump(_without_nan(report), f, indent=2, allow_nan=False)
    _move_into_place(staging, output_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  output_dir = _OUTPUT_DIR.value or os.path.join(_WORKDIR.value, 'evaluation')
  try:
    report = evaluate(_WORKDIR.value, _DEMOS.value, output_dir)
  except (checkpointing.CheckpointError, demonstrations.DemonstrationError,
          OutputError) as e:
    sys.exit('error: ' + '; '.join(line.strip() for line in str(e).splitlines()))
  for name, errors in report['imitation_errors_by_phase'].items():
    print(f'{name} by tenth of the demos: ' + ' '.join(f'{e:.2f}' for e in errors))
    print(f'{name} against the demo shifted by frames: ' + ', '.join(
        f'{offset} {e[name]:.2f}'
        for offset, e in report['imitation_errors_by_frame_offset'].items()))
  imitation, task = report['imitation'], report['task_policy']
  print(f"imitation reward {imitation['imitation_reward']:.3f} over "
        f"{len(report['imitation_per_demo'])} demos; task policy success "
        f"{'n/a' if task is None else format(task['task_success'], '.2f')}, "
        f"demonstrators {report['demonstrators']['task_success']:.2f}; "
        f'wrote {os.path.abspath(output_dir)}')


if __name__ == '__main__':
  cli.run(main)
