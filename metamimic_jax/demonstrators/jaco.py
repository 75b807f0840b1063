"""A scripted Jaco demonstrator that stacks the bricks, one on top of the other.

It reads privileged physics state (brick and pinch-site poses), plans Cartesian
waypoints for the pinch site, pointing down, and tracks them with inverse kinematics
and a proportional joint-velocity controller. For every brick in turn: approach (from a
random direction), descend, grasp, lift, carry, lower onto the brick below, release,
retreat. Every seed draws its own heights, speeds, approach offsets and pauses, so each
demonstration is a different skill; smooth action noise and the pauses make it imperfect.
"""

import dataclasses
from typing import Callable, List, Optional, Tuple

import dm_env
from dm_control import mjcf
from dm_control.utils import inverse_kinematics
import numpy as np

from metamimic_jax.environments import base
from metamimic_jax.environments import jaco

_OPEN, _CLOSE = -5.0, 5.0  # Finger velocity commands.
_STACK_HEIGHT = 0.0192  # A brick's frame sits this far above the one below it.
_GRASP_HEIGHT = 0.012  # Pinch site above a brick's frame when grasping.
_JOINT_GAIN = 8.0  # Joint velocity per radian of error.


def _yaw(quaternion: np.ndarray) -> float:
  w, x, y, z = quaternion
  return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _down_quaternion(yaw: float) -> np.ndarray:
  """Pinch site pointing down, its closing (x) axis at `yaw` from the world x axis."""
  c, s = np.cos(yaw / 2), np.sin(yaw / 2)
  return np.array([0.0, c, s, 0.0])  # [c, 0, 0, s] * [0, 1, 0, 0].


def _wrap(angle):
  return (angle + np.pi) % (2 * np.pi) - np.pi


def _nearest_half_turn(angle: float, reference: float) -> float:
  """`angle` plus a multiple of pi, as close as possible to `reference`.

  Bricks and the gripper are symmetric under half turns about the vertical.
  """
  return reference + _wrap(2 * (angle - reference)) / 2


@dataclasses.dataclass
class _Segment:
  """Move the pinch site to a target over `steps` control steps, fingers `fingers`."""
  target: Callable[[], Tuple[np.ndarray, float]]  # Evaluated when the segment starts.
  steps_per_metre: float
  fingers: float
  min_steps: int = 1


class StackingDemonstrator(base.Demonstrator):
  """Picks each brick and places it on the one below, in stacking order."""

  def __init__(self, seed: int, environment: 'jaco.JacoStackEnvironment',
               noise_scale: float = 0.04):
    self._rng = np.random.default_rng(seed)
    self._environment = environment
    self._noise_scale = noise_scale
    task = environment.task
    self._site = task.hand.pinch_site.full_identifier
    self._joint_names = [j.full_identifier for j in task.arm.joints]
    physics = environment.physics
    self._arm = physics.bind(task.arm.joints)
    self._pinch = physics.bind(task.hand.pinch_site)
    self._frames = [physics.bind(mjcf.get_attachment_frame(b.mjcf_model))
                    for b in task.bricks]
    self._action_low = environment.action_spec().minimum[:6]
    self._action_high = environment.action_spec().maximum[:6]
    self._segments: List[_Segment] = []
    self._done_steps = 0
    self._grasp_offset: Optional[np.ndarray] = None

  @property
  def done(self) -> bool:
    return self._done_steps >= self._hold_steps

  def reset(self, timestep: dm_env.TimeStep) -> None:
    del timestep
    rng = self._rng
    self._segments = []
    for top in range(1, len(self._frames)):
      self._plan_brick(top, rng)
    self._segment_index = -1
    self._start_segment()
    self._noise = np.zeros(6)
    self._done_steps = 0
    self._hold_steps = int(rng.integers(5, 12))

  def _plan_brick(self, top: int, rng: np.random.Generator) -> None:
    """Appends the segments that pick brick `top` and put it on brick `top - 1`."""
    speed = rng.uniform(0.8, 1.3)  # Scales every segment's duration.
    hover = rng.uniform(0.06, 0.12)
    lift = rng.uniform(0.08, 0.16)
    approach_offset = rng.normal(0.0, 0.04, 2)
    place_hover = rng.uniform(0.02, 0.05)
    top_frame, bottom_frame = self._frames[top], self._frames[top - 1]

    def grasp_yaw():
      current = _yaw(self._current_quaternion())
      return _nearest_half_turn(_yaw(top_frame.xquat), current)

    def above_brick():
      position = top_frame.xpos.copy()
      position[:2] += approach_offset
      position[2] += hover + 0.03
      return position, grasp_yaw()

    def hover_brick():
      return top_frame.xpos + [0, 0, hover], grasp_yaw()

    def at_brick():
      return top_frame.xpos + [0, 0, _GRASP_HEIGHT], grasp_yaw()

    def hold():
      return self._reference_position, self._reference_yaw

    def lifted():
      return self._reference_position + [0, 0, lift], self._reference_yaw

    def over_bottom(height):
      def target():
        brick_yaw = _nearest_half_turn(_yaw(bottom_frame.xquat), _yaw(top_frame.xquat))
        pinch_yaw = self._reference_yaw + _wrap(brick_yaw - _yaw(top_frame.xquat))
        brick_position = bottom_frame.xpos + [0, 0, _STACK_HEIGHT + height]
        self._remember_grasp(top_frame)
        return self._pinch_for_brick(brick_position, brick_yaw, pinch_yaw), pinch_yaw
      return target

    def retreat():
      return self._reference_position + [0, 0, rng.uniform(0.05, 0.1)], self._reference_yaw

    scale = 400.0 * speed  # Control steps per metre.
    self._segments += [
        _Segment(above_brick, scale, _OPEN, 10),
        _Segment(hover_brick, scale, _OPEN, int(rng.integers(5, 15))),
        _Segment(at_brick, scale * 1.5, _OPEN, 10),
        _Segment(hold, scale, _CLOSE, int(rng.integers(12, 20))),
        _Segment(lifted, scale, _CLOSE, 10),
        _Segment(over_bottom(place_hover + 0.03), scale, _CLOSE, 15),
        _Segment(over_bottom(place_hover), scale * 1.5, _CLOSE, int(rng.integers(5, 15))),
        _Segment(over_bottom(0.003), scale * 2, _CLOSE, 10),
        _Segment(over_bottom(-0.006), scale * 2, _CLOSE, 10),
        _Segment(hold, scale, _OPEN, int(rng.integers(10, 16))),
        _Segment(retreat, scale, _OPEN, 10),
    ]

  def _current_quaternion(self) -> np.ndarray:
    quaternion = np.empty(4)
    from mujoco import mju_mat2Quat  # pylint: disable=g-import-not-at-top
    mju_mat2Quat(quaternion, self._pinch.xmat.astype(np.float64))
    return quaternion

  def _remember_grasp(self, frame) -> None:
    """The grasped brick's position and yaw in the (down-pointing) pinch frame."""
    rotation = _down_rotation(_yaw(self._current_quaternion()))
    self._grasp_offset = rotation.T @ (frame.xpos - self._pinch.xpos)

  def _pinch_for_brick(self, brick_position, brick_yaw, pinch_yaw) -> np.ndarray:
    del brick_yaw
    return brick_position - _down_rotation(pinch_yaw) @ self._grasp_offset

  def _start_segment(self) -> None:
    self._segment_index += 1
    if self._segment_index == 0:
      self._reference_position = self._pinch.xpos.copy()
      self._reference_yaw = _yaw(self._current_quaternion())
    if self._segment_index >= len(self._segments):
      return
    segment = self._segments[self._segment_index]
    self._from = (self._reference_position.copy(), self._reference_yaw)
    target_position, target_yaw = segment.target()
    self._to = (np.asarray(target_position, np.float64), target_yaw)
    distance = np.linalg.norm(self._to[0] - self._from[0])
    distance += 0.05 * abs(_wrap(target_yaw - self._from[1]))
    self._steps = max(segment.min_steps, int(distance * segment.steps_per_metre))
    self._t = 0

  def step(self, timestep: dm_env.TimeStep) -> np.ndarray:
    del timestep
    if self._segment_index >= len(self._segments):
      self._done_steps += 1
      fingers = _OPEN
    else:
      segment = self._segments[self._segment_index]
      fingers = segment.fingers
      self._t += 1
      s = min(self._t / self._steps, 1.0)
      ease = 3 * s**2 - 2 * s**3
      self._reference_position = self._from[0] + ease * (self._to[0] - self._from[0])
      self._reference_yaw = self._from[1] + ease * _wrap(self._to[1] - self._from[1])
      if self._t >= self._steps:
        self._start_segment()
    arm = self._arm_velocity(self._reference_position, self._reference_yaw)
    self._noise = 0.8 * self._noise + self._rng.normal(0, self._noise_scale, 6)
    arm = np.clip(arm + self._noise, self._action_low, self._action_high)
    return np.concatenate([arm, np.full(3, fingers)]).astype(np.float32)

  def _arm_velocity(self, position: np.ndarray, yaw: float) -> np.ndarray:
    result = inverse_kinematics.qpos_from_site_pose(
        self._environment.physics, self._site, target_pos=position,
        target_quat=_down_quaternion(yaw), joint_names=self._joint_names,
        tol=1e-10, max_steps=30)
    solution = self._environment.physics.named.data.qpos  # For indexing only.
    del solution
    target = result.qpos[self._arm_qpos_indices()]
    return _JOINT_GAIN * _wrap(target - self._arm.qpos)

  def _arm_qpos_indices(self):
    return self._environment.physics.model.jnt_qposadr[self._arm.element_id]


def _down_rotation(yaw: float) -> np.ndarray:
  """The rotation matrix of `_down_quaternion(yaw)`."""
  c, s = np.cos(yaw), np.sin(yaw)
  return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])
