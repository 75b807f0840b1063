"""Bad input at every entry point: one clear line, a non-zero exit, no traceback, and no
half-written file, before any node starts or any learning happens.

Each case runs an entry point in a process of its own; the cases run a few at a time
(one module fixture launches them all). Each process is forked from a server that has
imported the entry points' libraries once (multiprocessing's forkserver, preloaded):
a fresh interpreter would spend ~5 s of CPU on TensorFlow's, Reverb's and JAX's imports
for each of the ~40 cases. The script itself runs in the child as `__main__`, its
flags, checks and exit as from a shell.
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os
import resource
import runpy
import subprocess
import sys
from typing import Callable, Optional, Sequence

import h5py
import numpy as np
import pytest

from metamimic_jax import checkpointing
from metamimic_jax import demo_sets
from metamimic_jax import demonstrations as demos_lib
from metamimic_jax import demonstrators
from metamimic_jax.config import MetaMimicConfig
from metamimic_jax.environments import make_domain
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {'train': 'experiments/train.py', 'imitate': 'launchpad_programs/imitate.py',
           'generate': 'experiments/generate_demos.py'}
# Flags under which a good input would start training at once (it never gets there).
BASE_FLAGS = {
    'train': ['--domain=point_mass', '--policy_layers=8', '--critic_layers=8',
              '--batch_size=8', '--min_replay_size=10', '--max_env_steps=100'],
    'imitate': ['--lp_launch_type=local_mp', '--domain=point_mass', '--num_actors=1',
                '--policy_layers=8', '--critic_layers=8', '--batch_size=8',
                '--min_replay_size=10', '--max_actor_steps=100'],
    'generate': ['--domain=point_mass', '--num_demos=2', '--num_workers=1'],
}
FILE_SIZE_LIMIT = 256 * 1024  # "Full disk": writes past this fail in the child.
TIMEOUT_SECONDS = 300  # For one case's process.


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  script: str
  flags: Sequence[str]  # {demos}, {work} and {tmp} are replaced by directories.
  message: str  # Must appear in the error line.
  setup: Optional[Callable[[str, str], None]] = None  # (demo_dir, workdir).
  full_disk: bool = False


def _good_demos():
  return list(helpers.point_mass_demos(3))


def _write_demos(demo_dir, domain='point_mass', edit=None):
  """A good train/held-out set; `edit(h5py.File)` then damages train.h5."""
  os.makedirs(demo_dir, exist_ok=True)
  demos = _good_demos()
  demos_lib.save(os.path.join(demo_dir, demo_sets.TRAIN_FILE), demos[:2], domain)
  demos_lib.save(os.path.join(demo_dir, demo_sets.HELD_OUT_FILE), demos[2:], domain)
  if edit is not None:
    with h5py.File(os.path.join(demo_dir, demo_sets.TRAIN_FILE), 'r+') as f:
      edit(f)


def _replace(key, transform):
  def edit(f):
    data = np.asarray(f[key][()])
    del f[key]
    f.create_dataset(key, data=transform(data))
  return edit


def _with_nan(data):
  data = data.copy()
  data[5, 0] = np.nan
  return data


def _truncated(demo_dir, _):
  _write_demos(demo_dir)
  path = os.path.join(demo_dir, demo_sets.TRAIN_FILE)
  os.truncate(path, os.path.getsize(path) // 2)


def _empty(demo_dir, _):
  _write_demos(demo_dir)
  open(os.path.join(demo_dir, demo_sets.TRAIN_FILE), 'w').close()


def _no_demos(demo_dir, _):
  _write_demos(demo_dir, edit=lambda f: [f.__delitem__(k) for k in list(f.keys())])


OBSERVATION = 'demo_00000/observations/position'
OTHER_CONFIG = MetaMimicConfig(batch_size=64)


def _checkpoint(directory, fingerprint):
  holder = type('Holder', (), {'save': lambda self: {'w': np.zeros(3, np.float32)}})()
  checkpointing.Checkpointer(directory, {'learner': holder}, fingerprint).save(force=True)


def _incompatible(subdir):
  def setup(demo_dir, workdir):
    _write_demos(demo_dir)
    _checkpoint(os.path.join(workdir, 'checkpoints', *subdir),
                checkpointing.fingerprint('point_mass', OTHER_CONFIG))
  return setup


def _corrupt(subdir):
  def setup(demo_dir, workdir):
    _write_demos(demo_dir)
    directory = os.path.join(workdir, 'checkpoints', *subdir)
    _checkpoint(directory, {})
    with open(os.path.join(directory, 'ckpt_0', 'manifest.json'), 'w') as f:
      f.write('{"format": "metamimic-checkpoint", "vers')
  return setup


def _pickled(subdir):
  def setup(demo_dir, workdir):
    _write_demos(demo_dir)
    directory = os.path.join(workdir, 'checkpoints', *subdir)
    os.makedirs(directory)
    with open(os.path.join(directory, 'ckpt_3.pkl'), 'wb') as f:
      f.write(b'\x80\x04 pickled')
  return setup


def _old_replay(demo_dir, workdir):
  """A replay checkpoint from before replay layouts were recorded."""
  _write_demos(demo_dir)
  directory = os.path.join(workdir, 'checkpoints', 'replay', '2026-11-01T00:00:00')
  os.makedirs(directory)
  open(os.path.join(directory, 'DONE'), 'w').close()


def _file_in_the_way(_, workdir):
  os.makedirs(os.path.dirname(workdir), exist_ok=True)
  open(workdir, 'w').close()


def _demo_cases(script):
  """Demonstration files that cannot be used, for an entry point that reads them."""
  train = demo_sets.TRAIN_FILE
  return [
      Case(f'{script}-demos-missing', script, ['--demo_dir={tmp}/nowhere'],
           f'nowhere/{train}: no such demonstration file'),
      Case(f'{script}-demos-empty', script, ['--demo_dir={demos}'],
           f'{train}: unreadable or truncated demonstration file', _empty),
      Case(f'{script}-demos-truncated', script, ['--demo_dir={demos}'],
           f'{train}: unreadable or truncated demonstration file', _truncated),
      Case(f'{script}-demos-no-demos', script, ['--demo_dir={demos}'],
           f'{train}: holds no demonstrations', _no_demos),
      Case(f'{script}-demos-other-domain', script, ['--demo_dir={demos}'],
           "recorded in domain 'jaco_stack', expected 'point_mass'",
           lambda d, _: _write_demos(d, domain='jaco_stack')),
      Case(f'{script}-demos-wrong-shape', script, ['--demo_dir={demos}'],
           'observations/position frames have shape (3,), the environment gives (2,)',
           lambda d, _: _write_demos(d, edit=_replace(
               OBSERVATION, lambda x: np.concatenate([x, x[:, :1]], axis=1)))),
      Case(f'{script}-demos-wrong-dtype', script, ['--demo_dir={demos}'],
           'observations/position has dtype float64, expected float32',
           lambda d, _: _write_demos(d, edit=_replace(
               OBSERVATION, lambda x: x.astype(np.float64)))),
      Case(f'{script}-demos-nan', script, ['--demo_dir={demos}'],
           'observations/position holds NaN or infinite values',
           lambda d, _: _write_demos(d, edit=_replace(OBSERVATION, _with_nan))),
  ]


def _workdir_and_checkpoint_cases(script, subdir):
  demos = '--demo_dir={demos}'
  return [
      Case(f'{script}-workdir-is-a-file', script, [demos],
           '{work}: exists and is not a directory',
           lambda d, w: (_write_demos(d), _file_in_the_way(d, w))),
      Case(f'{script}-workdir-full', script, [demos],
           '{work}: cannot write there (File too large)',
           lambda d, _: _write_demos(d), full_disk=True),
      Case(f'{script}-checkpoint-incompatible', script, [demos],
           'incompatible configuration', _incompatible(subdir)),
      Case(f'{script}-checkpoint-corrupt', script, [demos],
           'no usable checkpoint in', _corrupt(subdir)),
      Case(f'{script}-checkpoint-pickle', script, [demos],
           'ckpt_3.pkl is a checkpoint in the old pickle format, which is refused',
           _pickled(subdir)),
  ]


CASES = [
    # Flags.
    Case('train-unknown-flag', 'train', ['--no_such_flag'],
         "Unknown command line flag 'no_such_flag'"),
    Case('train-zero-steps', 'train', ['--max_env_steps=0'],
         'flag --max_env_steps=0: 0 is not a positive integer'),
    Case('train-bad-layers', 'train', ['--policy_layers=a,b'],
         "--policy_layers must be comma-separated integers, got ['a', 'b']"),
    Case('train-discount-one', 'train', ['--discount=1'], 'discount'),
    Case('train-extra-argument', 'train', ['extra'], "unexpected arguments: ['extra']"),
    Case('imitate-zero-actors', 'imitate', ['--num_actors=0'],
         'flag --num_actors=0: 0 is not a positive integer'),
    Case('imitate-sigmas', 'imitate', ['--min_sigma=0.5', '--max_sigma=0.1'],
         '--min_sigma must not exceed --max_sigma'),
    Case('imitate-domain', 'imitate', ['--domain=cartpole'],
         'flag --domain=cartpole: value should be one of'),
    Case('imitate-negative-batch', 'imitate', ['--batch_size=-8'],
         'flag --batch_size=-8: -8 is not a positive integer'),
    Case('generate-one-demo', 'generate', ['--num_demos=1', '--output_dir={tmp}/out'],
         'flag --num_demos=1: 1 is not integer >= 2'),
    Case('generate-no-output-dir', 'generate', [],
         'Flag --output_dir must have a value other than None'),
    Case('generate-held-out-fraction', 'generate',
         ['--held_out_fraction=0', '--output_dir={tmp}/out'], 'strictly between 0 and 1'),
    # Output directories of the demo generator.
    Case('generate-output-is-a-file', 'generate', ['--output_dir={tmp}/file/out'],
         '{tmp}/file/out: cannot write there (Not a directory)',
         lambda d, w: _file_in_the_way(d, os.path.join(os.path.dirname(w), 'file'))),
    Case('generate-output-unwritable', 'generate', ['--output_dir=/proc/metamimic_out'],
         '/proc/metamimic_out: cannot write there'),
    Case('generate-output-full', 'generate', ['--output_dir={tmp}/out'],
         '{tmp}/out: cannot write there (File too large)', full_disk=True),
    *_demo_cases('train'),
    *_demo_cases('imitate'),
    *_workdir_and_checkpoint_cases('train', ()),
    *_workdir_and_checkpoint_cases('imitate', ('learner',)),
    Case('imitate-replay-old-layout', 'imitate', ['--demo_dir={demos}'],
         '{work}/checkpoints/replay: its transitions are stored in replay layout 1 or '
         'older, and this code reads layout 3', _old_replay),
]


def _fill(text, tmp, work, demos):
  return text.replace('{tmp}', tmp).replace('{work}', work).replace('{demos}', demos)


def _limit_file_size():
  resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, resource.RLIM_INFINITY))


# What the entry points import, loaded once by the server that forks the cases.
PRELOAD = ['metamimic_jax', 'metamimic_jax.distributed', 'metamimic_jax.training',
           'metamimic_jax.supervision', 'launchpad', 'reverb', __name__]


def _run_script(argv, stderr_path, full_disk):
  """In the forked child: runs argv[0] as __main__, stdout discarded, stderr (fd 2)
  to `stderr_path`."""
  os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
  os.dup2(os.open(stderr_path, os.O_WRONLY), 2)
  if full_disk:
    _limit_file_size()
  os.chdir(ROOT)
  sys.argv = list(argv)
  runpy.run_path(argv[0], run_name='__main__')


def _run(context, case, base):
  tmp = os.path.join(base, case.name)
  work, demos = os.path.join(tmp, 'work'), os.path.join(tmp, 'demos')
  os.makedirs(tmp)
  if case.setup is not None:
    case.setup(demos, work)
  flags = [_fill(flag, tmp, work, demos) for flag in case.flags]
  if case.script != 'generate':
    flags.append(f'--workdir={work}')
  argv = [os.path.join(ROOT, SCRIPTS[case.script]), *BASE_FLAGS[case.script], *flags]
  stderr_path = os.path.join(base, f'{case.name}.stderr')
  open(stderr_path, 'w').close()
  process = context.Process(target=_run_script, args=(argv, stderr_path, case.full_disk))
  process.start()
  process.join(timeout=TIMEOUT_SECONDS)
  if process.exitcode is None:  # Hung, even if its line was written: a failure.
    process.kill()
    process.join()
    raise subprocess.TimeoutExpired(argv, TIMEOUT_SECONDS)
  with open(stderr_path) as f:
    result = subprocess.CompletedProcess(argv, process.exitcode, stderr=f.read())
  return tmp, _fill(case.message, tmp, work, demos), result


@pytest.fixture(scope='module', name='results')
def _results(tmp_path_factory):
  # Recorded once here, so that setups in threads find them cached.
  _good_demos()
  base = str(tmp_path_factory.mktemp('bad_input'))
  context = multiprocessing.get_context('forkserver')
  context.set_forkserver_preload(PRELOAD)
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    futures = {case.name: pool.submit(_run, context, case, base) for case in CASES}
    return {name: future.result() for name, future in futures.items()}


def _leftovers(directory):
  """Temporary or partial files anywhere under `directory`."""
  return [os.path.join(root, name) for root, dirs, files in os.walk(directory)
          for name in files + dirs
          if '.tmp' in name or name.startswith(('.probe_', '.tmp_'))]


# The fixture's launches count against the first case's time: ~11 s on 2 cores (fresh
# interpreters took ~96 s), more on a loaded machine.
@pytest.mark.timeout(900)
@pytest.mark.parametrize('case', CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_clear_line(results, case):
  tmp, message, result = results[case.name]
  assert result.returncode != 0, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if message in line]
  assert len(lines) == 1, (message, result.stderr[-3000:])
  assert not _leftovers(tmp)
  if case.script == 'generate':
    assert not os.path.exists(os.path.join(tmp, 'out', demo_sets.TRAIN_FILE))
  assert not os.path.exists(os.path.join(tmp, 'work', 'logs'))  # Nothing started.


@pytest.mark.slow  # Records demonstrations in the subprocess.
@pytest.mark.parametrize('script', ['train', 'generate'])
def test_too_few_successful_demos_to_split(tmp_path, script):
  domain = make_domain('point_mass')
  seed = 0  # The first program seed whose first two demonstrations do not both succeed.
  while all(demo_sets.is_successful(demonstrators.record_demonstration(
      domain, seed * (100_000 if script == 'train' else 1) + i)) for i in range(2)):
    seed += 1
  flags = ([f'--workdir={tmp_path / "work"}'] if script == 'train'
           else [f'--output_dir={tmp_path / "work" / "demos"}'])
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, SCRIPTS[script]), *BASE_FLAGS[script],
       f'--seed={seed}', '--num_demos=2', *flags],
      capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=ROOT)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: only ')
  assert 'too few to split' in result.stderr
  assert not os.path.exists(tmp_path / 'work' / 'demos' / demo_sets.TRAIN_FILE)
