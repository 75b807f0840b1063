"""Single-process training: it learns, checkpoints, resumes, and refuses bad input."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from metamimic_jax import plotting
from metamimic_jax import training
from metamimic_jax.config import FeatureGroup, MetaMimicConfig
from metamimic_jax.environments import make_domain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny, fast setting: small networks, short horizon, a looser reward scale (500, not
# the domain's 2000) so the signal is dense early. Measured: 0.06 -> 0.36 in 37k steps.
FAST_CONFIG = MetaMimicConfig(
    reward_groups=(FeatureGroup(('position', 'velocity'), 1.0, 500.0),),
    batch_size=64, learning_rate=3e-4, samples_per_insert=8.0, n_step=3, discount=0.9,
    vmax=10.0, num_atoms=21, min_replay_size=500, target_update_period=20,
    policy_layer_sizes=(64, 64), critic_layer_sizes=(64, 64), train_task_policy=False,
    policy_preactivation_penalty=0.01)  # Keeps the tanh policy out of saturation.


def _settings(workdir, **kwargs):
  # 40 recorded point-mass demos keep about 25 successful ones (the 20 train / 4 held-out
  # of the earlier, unfiltered 24).
  defaults = dict(workdir=str(workdir), num_demos=40, held_out_fraction=0.17,
                  num_demo_workers=1, eval_every_env_steps=3000,
                  num_task_eval_episodes=2, seed=0)
  return training.TrainSettings(**{**defaults, **kwargs})


def _evaluations(workdir):
  return plotting.read_csv(os.path.join(workdir, 'logs', 'evaluator', 'logs.csv'))


@pytest.mark.slow
def test_short_training_run_beats_the_untrained_policy_on_held_out_demos(tmp_path):
  # Seeded: demos, environments and JAX keys come from settings.seed; only Reverb's
  # uniform sampling (its own RNG, several threads) varies from run to run.
  training.run(_settings(tmp_path, max_env_steps=39_000), FAST_CONFIG)
  rewards = _evaluations(tmp_path)['imitation_reward']
  untrained, learned = rewards[0], np.max(rewards[-3:])
  assert learned > untrained + 0.1, rewards
  for name in ('learning_curve.png', 'imitations.png'):
    assert os.path.getsize(tmp_path / name) > 1000
  assert os.listdir(tmp_path / 'checkpoints')


def test_rerun_resumes_from_the_checkpoint(tmp_path):
  config = MetaMimicConfig(batch_size=16, min_replay_size=50, policy_layer_sizes=(8,),
                           critic_layer_sizes=(8,), train_task_policy=False)
  training.run(_settings(tmp_path, num_demos=4, max_env_steps=500,
                         eval_every_env_steps=500), config)
  first = _evaluations(tmp_path)
  training.run(_settings(tmp_path, num_demos=4, max_env_steps=1000,
                         eval_every_env_steps=900), config)
  resumed = _evaluations(tmp_path)['actor_steps'][len(first['actor_steps']):]
  assert resumed[0] >= first['actor_steps'][-1] >= 500  # Counts on, not from zero.
  # The evaluation period (900) is cut to what is left of the budget: the run stops
  # within one episode past it, not a whole period.
  assert 1000 <= resumed[-1] < 1000 + make_domain('point_mass').demo_length


def test_the_wall_time_limit_ends_a_run_within_an_episode_not_an_evaluation_period(
    tmp_path):
  config = MetaMimicConfig(batch_size=16, min_replay_size=50, policy_layer_sizes=(8,),
                           critic_layer_sizes=(8,), train_task_policy=False)
  limit_minutes = 0.1
  results = training.run(_settings(tmp_path, num_demos=4, max_env_steps=10**6,
                                   eval_every_env_steps=10**5,
                                   max_wall_minutes=limit_minutes), config)
  evaluations = _evaluations(tmp_path)
  # The untrained evaluation, then one where time ran out: far inside the period.
  assert len(evaluations['actor_steps']) == 2
  assert 0 < results['actor_steps'] < 10**5
  # An episode of 100 steps takes well under a second here; allow 30 s of slack.
  assert limit_minutes < results['wall_minutes'] < limit_minutes + 0.5


def test_train_script_refuses_bad_demonstrations_clearly(tmp_path):
  (tmp_path / 'train.h5').write_bytes(b'\x89HDF\r\n truncated')
  (tmp_path / 'held_out.h5').write_bytes(b'')
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'train.py'),
       f'--workdir={tmp_path / "run"}', f'--demo_dir={tmp_path}'],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0
  assert f'{tmp_path / "train.h5"}' in result.stderr
  assert 'Traceback' not in result.stderr


def _logged_actor_steps(workdir) -> list:
  """The actor's count after each episode, from its log."""
  path = os.path.join(workdir, 'logs', 'actor', 'logs.csv')
  return list(plotting.read_csv(path).get('actor_steps', ())) if os.path.exists(path) else []


def test_ctrl_c_stops_the_train_script_with_a_checkpoint_to_resume_from(tmp_path):
  workdir = tmp_path / 'run'
  # Its own process group, as a terminal's Ctrl-C reaches the script and its workers.
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'experiments', 'train.py'),
       f'--workdir={workdir}', '--num_demos=4', '--batch_size=16',
       '--min_replay_size=50', '--policy_layers=8', '--critic_layers=8',
       '--notrain_task_policy', '--max_env_steps=1000000'],
      stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
  try:
    deadline = time.time() + 240
    while len(_logged_actor_steps(workdir)) < 3 and process.poll() is None:
      assert time.time() < deadline, 'training did not start'
      time.sleep(0.2)
    episodes_before = len(_logged_actor_steps(workdir))
    os.killpg(process.pid, signal.SIGINT)
    sent = time.time()
    _, stderr = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
  # At the end of the episode under way (100 steps, well under a second here).
  assert time.time() - sent < 10
  assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert 'Traceback' not in stderr
  stopped = re.search(r'Stopped by SIGINT at (\d+) env steps', stderr)
  assert stopped, stderr[-2000:]
  stopped_steps = int(stopped.group(1))
  # It finished the episode under way (and one more, if one ended as the signal went).
  episodes = _logged_actor_steps(workdir)
  assert stopped_steps == episodes[-1]
  assert len(episodes) - episodes_before <= 2

  # The same settings resume at the stopped count; a budget already spent ends there.
  config = MetaMimicConfig(batch_size=16, min_replay_size=50, policy_layer_sizes=(8,),
                           critic_layer_sizes=(8,), train_task_policy=False)
  results = training.run(_settings(workdir, num_demos=4, max_env_steps=stopped_steps),
                         config)
  assert results['actor_steps'] == stopped_steps


def test_sigterm_ends_an_in_process_run_after_the_episode_with_a_checkpoint(tmp_path):
  config = MetaMimicConfig(batch_size=16, min_replay_size=50, policy_layer_sizes=(8,),
                           critic_layer_sizes=(8,), train_task_policy=False)
  previous_handler = signal.getsignal(signal.SIGTERM)

  def terminate_once_training():
    while len(_logged_actor_steps(tmp_path)) < 2:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=terminate_once_training, daemon=True).start()
  with pytest.raises(training.Stopped) as stopped:
    training.run(_settings(tmp_path, num_demos=4, max_env_steps=10**6), config)
  assert stopped.value.code == 128 + signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is previous_handler
  # The checkpoint holds every episode run, the last one to its end.
  episodes = _logged_actor_steps(tmp_path)
  results = training.run(_settings(tmp_path, num_demos=4, max_env_steps=1), config)
  assert len(episodes) >= 2
  assert results['actor_steps'] == episodes[-1]


def test_several_environments_act_together_and_every_step_is_counted(tmp_path):
  config = MetaMimicConfig(batch_size=16, min_replay_size=50, policy_layer_sizes=(8,),
                           critic_layer_sizes=(8,), train_task_policy=False)
  results = training.run(_settings(tmp_path, num_demos=4, max_env_steps=600,
                                   eval_every_env_steps=600, num_envs=3), config)
  episodes = _logged_actor_steps(tmp_path)
  # Equal-length demos: the three environments end their episodes together.
  assert len(episodes) % 3 == 0 and len(episodes) >= 6
  assert results['actor_steps'] == episodes[-1] >= 600
  assert results['learner_steps'] > 0
  with pytest.raises(ValueError, match='num_envs must be >= 1, got 0'):
    training.run(_settings(tmp_path, num_envs=0), config)
