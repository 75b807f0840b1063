"""Videos: composed frames, the reward strip, and MP4s that decode to one frame a step."""

import numpy as np
import pytest

from metamimic_jax import evaluation
from metamimic_jax import videos
from tests import helpers


def test_reward_strip_colours_the_steps_done_and_writes_the_current_reward():
  rewards = [1.0, 0.5, 0.0, 1.0]  # Four steps of 10 columns each.
  strip = videos.reward_strip(rewards, step=2, width=40, height=41)
  bottom = strip[-1]
  np.testing.assert_array_equal(bottom[0:20], np.broadcast_to(videos._DONE, (20, 3)))
  np.testing.assert_array_equal(bottom[20:30], np.broadcast_to(videos._BACKGROUND, (10, 3)))
  np.testing.assert_array_equal(bottom[30:40], np.broadcast_to(videos._AHEAD, (10, 3)))
  # Below the label (rows 0-14): full reward fills rows 1-40, half reward rows 21-40.
  assert (strip[15:, 5] == videos._DONE).all()
  assert (strip[15:21, 15] == videos._BACKGROUND).all()
  assert (strip[21:, 15] == videos._DONE).all()
  # The label is drawn over the first (full) bar.
  assert (strip[1:15, :10] != videos._DONE).any(axis=-1).any()


def test_compose_puts_demonstration_left_imitation_right_and_refuses_mismatches():
  demo = [np.full((8, 6, 3), 10, np.uint8)] * 3
  imitation = [np.full((8, 6, 3), 200, np.uint8)] * 3
  frames = videos.compose(demo, imitation, [0.5, 1.0])
  assert frames.shape == (3, 8 + 4, 12, 3)
  assert (frames[:, :8, :6] == 10).all() and (frames[:, :8, 6:] == 200).all()
  with pytest.raises(ValueError, match='do not match'):
    videos.compose(demo, imitation[:2], [0.5, 1.0])


def test_rendered_imitation_video_decodes_with_one_frame_per_step(tmp_path):
  _, environment, _ = helpers.point_mass_setup(num_demos=1)
  action = np.array([0.2, -0.1], np.float32)
  actor = evaluation.ConstantActor(action)
  length = environment.demonstrations[0].length
  demo_frames = videos.rendered_episode(
      environment, 0, videos.demonstrator_policy(environment, 0), 16)
  imitation_frames = videos.rendered_episode(environment, 0,
                                             evaluation.actor_policy(actor), 16)
  assert len(demo_frames) == len(imitation_frames) == length
  # The same initial state, then different paths.
  np.testing.assert_array_equal(demo_frames[0], imitation_frames[0])
  assert not np.array_equal(demo_frames[-1], imitation_frames[-1])
  rewards = evaluation.imitate(actor, environment, 0).imitation_rewards
  frames = videos.compose(demo_frames, imitation_frames, rewards)
  path = str(tmp_path / 'video.mp4')
  videos.write_mp4(path, frames)
  decoded = videos.read_mp4(path)
  assert decoded.shape == frames.shape == (length, 24, 32, 3)
  # Lossy, but close: the mean absolute difference is a few grey levels.
  assert np.mean(np.abs(decoded.astype(float) - frames)) < 10
