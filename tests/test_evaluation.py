"""Evaluation metrics: tracking errors in physical units on hand-made trajectories."""

import dataclasses

import numpy as np
import pytest

from metamimic_jax import baselines
from metamimic_jax import evaluation
from metamimic_jax.environments import jaco
from metamimic_jax.environments import point_mass
from tests import helpers


def _arm_pos(angles):
  angles = np.asarray(angles, np.float32)
  return np.concatenate([np.sin(angles), np.cos(angles)])


def test_joint_angle_difference_wraps_around_pi():
  a = _arm_pos([3.1, -3.1, 0.5, 0.0, 1.0, -2.0])
  b = _arm_pos([-3.1, 3.1, 0.2, 0.0, -1.0, 2.0])
  expected = [6.2 - 2 * np.pi, 2 * np.pi - 6.2, 0.3, 0.0, 2.0, 2 * np.pi - 4.0]
  np.testing.assert_allclose(jaco.joint_angle_difference(a, b), expected, atol=1e-5)


def test_jaco_tracking_errors_in_cm_and_rad():
  domain = jaco.JacoStackDomain(num_bricks=3)
  demo = {'pinch_pos': np.array([0.1, 0.2, 0.3]), 'arm_pos': _arm_pos([0.0] * 6),
          'brick0_pos': np.zeros(3), 'brick1_pos': np.zeros(3),
          'brick2_pos': np.array([0.0, 0.0, 0.1])}
  observed = {'pinch_pos': np.array([0.13, 0.24, 0.3]),  # 5 cm away.
              'arm_pos': _arm_pos([0.1, -0.1, 0.4, 0.0, 0.0, -0.6]),  # Mean |d| 0.2.
              'brick0_pos': np.ones(3),  # The fixed base brick does not count.
              'brick1_pos': np.array([0.0, 0.02, 0.0]),  # 2 cm.
              'brick2_pos': np.array([0.0, 0.0, 0.06])}  # 4 cm.
  errors = domain.tracking_errors(observed, demo)
  assert errors['pinch_error_cm'] == pytest.approx(5.0, rel=1e-6)
  assert errors['brick_error_cm'] == pytest.approx(3.0, rel=1e-6)
  assert errors['arm_joint_error_rad'] == pytest.approx(0.2, rel=1e-5)


def test_point_mass_tracking_error_in_cm():
  errors = point_mass.PointMassDomain().tracking_errors(
      {'position': np.array([0.03, 0.04])}, {'position': np.zeros(2)})
  assert errors == {'position_error_cm': pytest.approx(5.0)}


def test_evaluate_imitation_averages_errors_over_steps_then_demos():
  _, environment, _ = helpers.point_mass_setup(num_demos=3)
  action = np.array([0.4, -0.2], np.float32)
  expected_errors, expected_final = [], []
  for index in (0, 2):  # A subset of the demonstrations.
    environment.select_demonstration(index)
    timestep = environment.reset()
    demo_positions = environment.demonstration.observations['position']
    errors = []
    for t in range(1, environment.demonstration.length):
      timestep = environment.step(action)
      errors.append(np.linalg.norm(timestep.observation['observation']['position']
                                   - demo_positions[t]))
    assert timestep.last()
    expected_errors.append(100 * np.mean(errors))
    expected_final.append(timestep.reward['task'] > 0)
  results = evaluation.evaluate_imitation(evaluation.ConstantActor(action), environment,
                                          demo_indices=(0, 2))
  assert results['position_error_cm'] == pytest.approx(np.mean(expected_errors), rel=1e-5)
  assert results['imitation_final_task_success'] == np.mean(expected_final)
  assert 0 < results['imitation_reward'] < 1


def test_evaluation_schedule_is_full_every_nth_round_and_sweeps_subsets_between():
  # 7 demos, 3 per quick round, full every 4th round.
  rounds = [evaluation.scheduled_subset(r, 7, 3, 4) for r in range(9)]
  assert rounds == [[0, 1, 2], [3, 4, 5], [6, 0, 1], None, [2, 3, 4], [5, 6, 0],
                    [1, 2, 3], None, [4, 5, 6]]
  # A subset as large as the demos is a full evaluation.
  assert evaluation.scheduled_subset(1, 3, 3, 4) is None


def test_demonstrators_rerun_from_their_seeds_copy_their_demonstrations():
  """Point mass is deterministic: each demo's own demonstrator scores exactly 1."""
  domain = point_mass.PointMassDomain()
  _, environment, _ = helpers.point_mass_setup(num_demos=3)
  result = baselines.demonstrator_imitation(domain, environment)
  assert result['imitation_reward'] == pytest.approx(1.0, abs=1e-6)


def _imitation(index, imitation_rewards, task_rewards, errors):
  steps = len(imitation_rewards)
  return evaluation.Imitation(
      demo_index=index, imitation_rewards=np.asarray(imitation_rewards),
      task_rewards=np.asarray(task_rewards, np.float32),
      tracking_errors={'position_error_cm': np.asarray(errors)},
      frame_indices=np.arange(1, steps + 1),
      observations={'position': np.zeros((steps + 1, 2))})


def test_summary_of_hand_made_imitations():
  imitations = [
      _imitation(0, [1.0, 0.5], [0, 1], [0.0, 4.0]),  # Reward 0.75, 2 cm, ends solved.
      _imitation(1, [0.2, 0.2, 0.5], [1, 0, 0], [1.0, 2.0, 6.0]),  # 0.3, 3 cm, not at end.
      _imitation(2, [0.0, 0.3], [0, 0], [9.0, 11.0])]  # 0.15, 10 cm, never solved.
  summary = evaluation.summarize_imitations(imitations)
  assert summary['imitation_reward'] == pytest.approx((0.75 + 0.3 + 0.15) / 3)
  assert summary['imitation_reward_min'] == pytest.approx(0.15)
  assert summary['imitation_reward_std'] == pytest.approx(np.std([0.75, 0.3, 0.15]))
  assert summary['position_error_cm'] == pytest.approx(5.0)
  assert summary['imitation_task_return'] == pytest.approx(2 / 3)
  assert summary['imitation_task_success'] == pytest.approx(2 / 3)
  assert summary['imitation_final_task_success'] == pytest.approx(1 / 3)


def test_errors_by_phase_of_hand_made_imitations():
  early = dataclasses.replace(_imitation(0, [0] * 4, [0] * 4, [1.0, 2.0, 3.0, 4.0]),
                              frame_indices=np.array([1, 2, 3, 4]))
  late = dataclasses.replace(_imitation(1, [0] * 2, [0] * 2, [10.0, 20.0]),
                             frame_indices=np.array([2, 4]))
  # Halves of each demo: frame 1 of 4 is in the first; 2, 3 and 4 of 4 in the second.
  by_phase = evaluation.errors_by_phase([early, late], num_phases=2)
  np.testing.assert_allclose(by_phase['position_error_cm'], [1.0, (2 + 3 + 4 + 10 + 20) / 5])
  with pytest.raises(ValueError, match='fewer steps than 10 phases'):
    evaluation.errors_by_phase([early, late])


def test_errors_by_frame_offset_find_a_lag_and_agree_with_the_summary():
  _, environment, _ = helpers.point_mass_setup(num_demos=2)
  imitation = evaluation.imitate(evaluation.ConstantActor(np.array([0.5, -0.5])),
                                 environment, 1)
  by_offset = evaluation.errors_by_frame_offset([imitation], environment, [0])
  assert by_offset[0]['position_error_cm'] == pytest.approx(
      evaluation.summarize_imitations([imitation])['position_error_cm'])
  # An imitation that is the demo two frames late.
  demo = environment.demonstrations[1].observations['position']
  steps = len(imitation.frame_indices)
  late = dataclasses.replace(imitation, observations={
      'position': demo[np.clip(np.arange(steps + 1) - 2, 0, None)]})
  errors = {offset: e['position_error_cm'] for offset, e in
            evaluation.errors_by_frame_offset([late], environment, [-4, -2, 0]).items()}
  assert errors[-2] == pytest.approx(0.0, abs=1e-6)
  assert errors[-4] > 0 and errors[0] > 0


def test_signed_offsets_are_the_imitation_minus_its_demo_frames():
  _, environment, _ = helpers.point_mass_setup(num_demos=2)
  imitation = evaluation.imitate(evaluation.ConstantActor(np.zeros(2)), environment, 1)
  demo = environment.demonstrations[1].observations['position']
  shifted = dataclasses.replace(imitation, observations={
      'position': demo[np.r_[0, imitation.frame_indices]] + np.array([0.01, -0.02])})
  offsets = evaluation.signed_offsets([shifted, shifted], environment, 'position')
  assert offsets.shape == (2 * len(imitation.frame_indices), 2)
  np.testing.assert_allclose(offsets, np.tile([0.01, -0.02], (len(offsets), 1)),
                             atol=1e-6)


def test_steps_to_success_and_task_summary():
  assert evaluation.steps_to_success([0, 0, 1, 0, 1]) == 3
  assert evaluation.steps_to_success([1]) == 1
  assert evaluation.steps_to_success([0, 0]) is None
  summary = evaluation.summarize_task([3, None, 7, None])
  assert summary == {'task_success': 0.5, 'task_steps_to_success': 5.0}
  assert np.isnan(evaluation.summarize_task([None])['task_steps_to_success'])


def test_imitate_records_every_step_of_a_known_trajectory():
  """A constant action's imitation: the record matches a hand-stepped episode."""
  _, environment, _ = helpers.point_mass_setup(num_demos=2)
  action = np.array([-0.3, 0.6], np.float32)
  environment.select_demonstration(1)
  positions = [environment.reset().observation['observation']['position']]
  rewards, last = [], False
  while not last:
    timestep = environment.step(action)
    positions.append(timestep.observation['observation']['position'])
    rewards.append(timestep.reward['imitation'])
    last = timestep.last()
  demo = environment.demonstrations[1].observations['position']
  imitation = evaluation.imitate(evaluation.ConstantActor(action), environment, 1)
  assert imitation.demo_index == 1
  np.testing.assert_allclose(imitation.observations['position'], positions)
  np.testing.assert_allclose(imitation.imitation_rewards, rewards)
  np.testing.assert_allclose(imitation.tracking_errors['position_error_cm'],
                             100 * np.linalg.norm(np.array(positions[1:]) - demo[1:],
                                                  axis=1), rtol=1e-5)
  assert imitation.reward == pytest.approx(np.mean(rewards))
