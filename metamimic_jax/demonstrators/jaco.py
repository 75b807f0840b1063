"""A scripted Jaco demonstrator that stacks the bricks, one on top of the other.

It reads privileged physics state (brick and pinch-site poses), plans Cartesian
waypoints for the pinch site, pointing down, and tracks them with inverse kinematics
and a proportional joint-velocity controller. For every brick in turn: approach (from a
random direction), descend, grasp, lift, carry, lower onto the brick below, release. A
brick that rests on the studs without clicking in is pressed home with a closed fist
(one end, then the other); one that fell off is picked again (a few attempts at most).

Every seed draws its own heights, speeds, approach offsets and pauses, so each
demonstration is a different skill; smooth action noise and the pauses make it imperfect.
"""

import dataclasses
import logging
from typing import Callable, List, Tuple

import dm_env
from dm_control import mjcf
from dm_control.utils import inverse_kinematics
import mujoco
import numpy as np

from metamimic_jax.demonstrators import base
from metamimic_jax.environments import base as env_base
from metamimic_jax.environments import jaco

# Finger angle targets (rad; their range is [0.15, 1.35]): wide open, pre-shaped to
# reach around a brick (no wider, so as not to hit its neighbours), and closed beyond
# the range, so the fingers squeeze.
_OPEN, _PRESHAPE, _CLOSE = 0.0, 0.95, 2.5
_FINGER_GAIN = 10.0  # Finger velocity per radian of error (saturates at 5).
_STACK_HEIGHT = 0.0192  # A stacked brick's frame sits this far above the one below.
_GRASP_HEIGHT = 0.015  # Grip centre above a brick's frame (its base) when grasping.
_PRESS_HEIGHT = 0.014  # Pinch site above a stacked brick's frame when pressing it.
# The fingertips grip (and the closed fist presses) off the pinch site, in its frame.
_GRIP_CENTRE = np.array([0.0, -0.009, 0.0])
_FIST_CENTRE = np.array([-0.005, -0.011, 0.0])
_PRESS_ALONG = 0.012  # Presses each end of the brick, this far from its centre (m).
_JOINT_GAIN = 8.0  # Joint velocity (rad/s) per radian of error.
_STEPS_PER_METRE = 300.0  # Unhurried Cartesian speed: 1 / (0.04 s * 300) = 8 cm/s.
_MAX_ATTEMPTS = 4  # Picks or presses per brick.

Pose = Tuple[np.ndarray, np.ndarray]  # Pinch-site position and quaternion.
Target = Callable[[], Pose]


class _QuietIK(logging.Filter):
  """Drops IK's non-convergence warnings: the controller tracks the best effort."""

  def filter(self, record):
    return 'Failed to converge' not in record.getMessage()


logging.getLogger('absl').addFilter(_QuietIK())


def _yaw(quaternion: np.ndarray) -> float:
  w, x, y, z = quaternion
  return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _wrap(angle):
  return (angle + np.pi) % (2 * np.pi) - np.pi


def _nearest_half_turn(angle: float, reference: float) -> float:
  """`angle` plus a multiple of pi, as close as possible to `reference`.

  Bricks and the grip are symmetric under half turns about the vertical.
  """
  return reference + _wrap(2 * (angle - reference)) / 2


def _down_quaternion(yaw: float) -> np.ndarray:
  """Pinch site pointing down, its closing (x) axis at `yaw` from the world x axis."""
  return np.array([0.0, np.cos(yaw / 2), np.sin(yaw / 2), 0.0])


def _down_rotation(yaw: float) -> np.ndarray:
  """The rotation matrix of `_down_quaternion(yaw)`."""
  c, s = np.cos(yaw), np.sin(yaw)
  return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def _quaternion(rotation: np.ndarray) -> np.ndarray:
  quaternion = np.empty(4)
  mujoco.mju_mat2Quat(quaternion, np.asarray(rotation, np.float64).ravel())
  return quaternion


def _angle(q0: np.ndarray, q1: np.ndarray) -> float:
  return 2 * float(np.arccos(min(1.0, abs(q0 @ q1))))


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
  if q0 @ q1 < 0:
    q1 = -q1
  angle = _angle(q0, q1) / 2
  if angle < 1e-6:
    return q1
  return (np.sin((1 - s) * angle) * q0 + np.sin(s * angle) * q1) / np.sin(angle)


@dataclasses.dataclass
class _Segment:
  """Moves the pinch site to `target` (evaluated when the segment starts)."""
  target: Target
  fingers: float
  min_steps: int
  speed: float = 1.0  # Multiplies the demonstration's Cartesian speed.
  needs_brick: bool = False  # Replan from here if the top brick is not in the hand.


class StackingDemonstrator(base.Demonstrator):
  """Picks each brick and places it on the one below, in stacking order."""

  def __init__(self, seed: int, domain: env_base.Domain,
               environment: jaco.JacoStackEnvironment, noise_scale: float = 0.03):
    del domain  # The environment holds all it reads.
    if not isinstance(environment, jaco.JacoStackEnvironment):
      raise ValueError('the jaco_stack demonstrator reads the simulator: it needs a '
                       f'JacoStackEnvironment, got {type(environment).__name__}')
    self._rng = np.random.default_rng(seed)
    self._environment = environment
    self._noise_scale = noise_scale
    task = environment.task
    physics = environment.physics
    self._site = task.hand.pinch_site.full_identifier
    self._joint_names = [j.full_identifier for j in task.arm.joints]
    self._arm = physics.bind(task.arm.joints)
    self._arm_qpos = physics.model.jnt_qposadr[self._arm.element_id]
    self._pinch = physics.bind(task.hand.pinch_site)
    self._hand = physics.bind(task.hand.joints)
    self._frames = [physics.bind(mjcf.get_attachment_frame(b.mjcf_model))
                    for b in task.bricks]
    spec = environment.action_spec()
    self._action_low, self._action_high = spec.minimum[:6], spec.maximum[:6]

  @property
  def done(self) -> bool:
    return self._finished and self._final_hold <= 0

  def reset(self, timestep: dm_env.TimeStep) -> None:
    del timestep
    self._speed = self._rng.uniform(0.8, 1.3)
    self._noise = np.zeros(6)
    self._top = 1  # The brick being stacked.
    self._attempts = 0
    self._finished = False
    self._final_hold = int(self._rng.integers(5, 12))
    self._reference = (self._pinch.xpos.copy(), _quaternion(self._pinch.xmat))
    self._segments: List[_Segment] = []
    self._next_segment()

  def step(self, timestep: dm_env.TimeStep) -> np.ndarray:
    del timestep
    if self._finished:
      self._final_hold -= 1
      fingers = _CLOSE
    else:
      segment = self._segments[0]
      fingers = segment.fingers
      self._t += 1
      s = min(self._t / self._steps, 1.0)
      ease = 3 * s**2 - 2 * s**3
      (start, start_quaternion), (end, end_quaternion) = self._from, self._to
      self._reference = (start + ease * (end - start),
                         _slerp(start_quaternion, end_quaternion, ease))
      if self._t >= self._steps:
        self._segments.pop(0)
        self._next_segment()
    arm = self._arm_velocity(*self._reference)
    self._noise = 0.8 * self._noise + self._rng.normal(0, self._noise_scale, 6)
    arm = np.clip(arm + self._noise, self._action_low, self._action_high)
    finger_velocity = np.clip(_FINGER_GAIN * (fingers - self._hand.qpos), -5.0, 5.0)
    return np.concatenate([arm, finger_velocity]).astype(np.float32)

  def _next_segment(self) -> None:
    """Starts the next segment, planning more when none is left."""
    if (self._segments and self._segments[0].needs_brick and
        self._frames[self._top].xpos[2] < 0.03):
      self._segments = []  # The grasp failed: pick again.
    if not self._segments:
      self._plan()
      if self._finished:
        return
    segment = self._segments[0]
    self._from = (self._reference[0].copy(), self._reference[1])
    position, quaternion = segment.target()
    self._to = (np.asarray(position, np.float64), quaternion)
    distance = (np.linalg.norm(self._to[0] - self._from[0]) +
                0.05 * _angle(quaternion, self._from[1]))  # Turning 1 rad ~ 5 cm.
    steps_per_metre = _STEPS_PER_METRE / (self._speed * segment.speed)
    self._steps = max(segment.min_steps, int(distance * steps_per_metre))
    self._t = 0

  def _plan(self) -> None:
    """Queues the next pick or press, or finishes when the stack stands."""
    seated = self._environment.seated_bricks()
    while self._top < len(self._frames) and seated[self._top - 1]:
      self._top += 1
      self._attempts = 0
    if self._top >= len(self._frames) or self._attempts >= _MAX_ATTEMPTS:
      self._finished = True
      return
    self._attempts += 1
    if self._rests_on_bottom():
      self._plan_press()
    else:
      self._plan_pick()

  def _rests_on_bottom(self) -> bool:
    top, bottom = self._frames[self._top], self._frames[self._top - 1]
    offset = top.xpos - bottom.xpos
    return (np.linalg.norm(offset[:2]) < 0.01 and
            _STACK_HEIGHT - 0.002 < offset[2] < _STACK_HEIGHT + 0.008)

  def _plan_pick(self) -> None:
    """Grasp the top brick, carry it over the bottom one, lower it, let go, rise."""
    rng = self._rng
    top, bottom = self._frames[self._top], self._frames[self._top - 1]
    hover = rng.uniform(0.06, 0.12)
    lift = rng.uniform(0.08, 0.16)
    approach_offset = rng.normal(0.0, 0.04, 2)
    place_hover = rng.uniform(0.02, 0.05)

    def over_top(height, offset=(0.0, 0.0)):
      def target():
        yaw = _nearest_half_turn(_yaw(top.xquat), self._pinch_yaw())
        centre = np.array(top.xpos) + [offset[0], offset[1], height]
        return centre - _down_rotation(yaw) @ _GRIP_CENTRE, _down_quaternion(yaw)
      return target

    def lifted():
      return self._reference[0] + [0, 0, lift], self._reference[1]

    def over_bottom(height):
      def target():
        # Turn the carried brick to the bottom brick's yaw, measured as held now.
        top_yaw = _yaw(top.xquat)
        brick_yaw = _nearest_half_turn(_yaw(bottom.xquat), top_yaw)
        pinch_yaw = self._pinch_yaw()
        grip = _down_rotation(pinch_yaw).T @ (top.xpos - self._pinch.xpos)
        pinch_yaw += brick_yaw - top_yaw
        brick = np.array(bottom.xpos) + [0, 0, _STACK_HEIGHT + height]
        return brick - _down_rotation(pinch_yaw) @ grip, _down_quaternion(pinch_yaw)
      return target

    self._segments += [
        _Segment(over_top(hover + 0.03, approach_offset), _OPEN, 10),
        _Segment(over_top(hover), _PRESHAPE, int(rng.integers(5, 15))),
        _Segment(over_top(_GRASP_HEIGHT), _PRESHAPE, 10, speed=0.7),
        _Segment(self._hold, _CLOSE, int(rng.integers(12, 20))),
        _Segment(lifted, _CLOSE, 10),
        _Segment(over_bottom(place_hover + 0.03), _CLOSE, 15, needs_brick=True),
        _Segment(over_bottom(place_hover), _CLOSE, int(rng.integers(5, 15)), speed=0.7),
        _Segment(over_bottom(0.003), _CLOSE, 10, speed=0.5),
        _Segment(self._hold, _OPEN, int(rng.integers(8, 14))),
        _Segment(self._raise(0.02, 0.04), _OPEN, 8),
    ]

  def _plan_press(self) -> None:
    """Close the fist, press both ends of the top brick down onto the studs, retreat."""
    top, bottom = self._frames[self._top], self._frames[self._top - 1]

    def press(along, height):
      def target():
        yaw = _yaw(self._reference[1])
        position = np.array(bottom.xpos) + [0, 0, _STACK_HEIGHT + height]
        position[:2] = top.xpos[:2]
        offset = _down_rotation(yaw) @ (_FIST_CENTRE - [0, along, 0])
        return position - offset, _down_quaternion(yaw)
      return target

    self._segments += [
        _Segment(self._hold, _CLOSE, 12),
        _Segment(press(_PRESS_ALONG, 0.04), _CLOSE, 8),
        _Segment(press(_PRESS_ALONG, _PRESS_HEIGHT), _CLOSE, 8, speed=0.5),
        _Segment(press(_PRESS_ALONG, 0.04), _CLOSE, 6),
        _Segment(press(-_PRESS_ALONG, 0.04), _CLOSE, 6),
        _Segment(press(-_PRESS_ALONG, _PRESS_HEIGHT), _CLOSE, 8, speed=0.5),
        _Segment(self._raise(0.05, 0.1), _CLOSE, 10),
    ]

  def _hold(self) -> Pose:
    return self._reference

  def _raise(self, low: float, high: float) -> Target:
    height = self._rng.uniform(low, high)
    return lambda: (self._reference[0] + [0, 0, height], self._reference[1])

  def _pinch_yaw(self) -> float:
    return _yaw(_quaternion(self._pinch.xmat))

  def _arm_velocity(self, position: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    """Joint velocities towards the IK solution for the pinch site's target pose."""
    solution = inverse_kinematics.qpos_from_site_pose(
        self._environment.physics, self._site, target_pos=position,
        target_quat=quaternion, joint_names=self._joint_names,
        tol=1e-10, max_steps=30)
    return _JOINT_GAIN * _wrap(solution.qpos[self._arm_qpos] - self._arm.qpos)
