"""The paper's domain: a Kinova Jaco arm stacks Duplo bricks (dm_control.manipulation).

The task is dm_control's `stack_2_bricks` (or `stack_3_bricks`): the bottom brick is
fixed to the table, the others are free, all placed at random, the arm starts at a random
pose above them. Control is 25 Hz joint velocities (6 arm joints, 3 fingers).

Observations are computed from the physics state after every step (no composer
observable buffers), so restoring a physics state reproduces its observation exactly:

  arm_pos     [12]  sin and cos of the 6 arm joint angles
  arm_vel     [6]   arm joint velocities
  hand_pos    [3]   finger joint angles
  hand_vel    [3]   finger joint velocities
  pinch_pos   [3]   pinch site (between the fingertips) position
  pinch_rmat  [9]   pinch site orientation
  brick{i}_pos  [3], brick{i}_quat [4]   brick i's pose; brick 0 is the base
  pixels      [S, S, 3] uint8   the front camera (only with `vision=True`)

The task reward is sparse: 1 when every brick sits on the one below it (stud-to-hole
distance within `STACK_TOLERANCE`) and the hand touches no brick, else 0.
"""

from typing import Dict, Mapping, Optional, Tuple

import dm_env
from dm_env import specs
from dm_control import composer
from dm_control import mjcf
from dm_control.manipulation import bricks
from dm_control.manipulation.shared import arenas
from dm_control.manipulation.shared import cameras
from dm_control.manipulation.shared import observations
from dm_control.manipulation.shared import robots
import mujoco
import numpy as np

from metamimic_jax import keys
from metamimic_jax.config import FeatureGroup
from metamimic_jax.environments import base

CONTROL_TIMESTEP = 0.04  # 25 Hz; 20 physics steps of 2 ms.
STACK_TOLERANCE = 0.004  # Summed distance (m) of two stud-hole pairs when stacked.
DEMO_LENGTH = {2: 500, 3: 900}  # 20 s and 36 s: a pick, press and retreat per brick.
# Imitation reward groups (see WORKSPACE_NOTES.md for the calibration), as (keys,
# weight, scale): the body pose (not velocities, which are noisy) in three groups whose
# scales give a graded signal from a stationary arm (about 0.2 each) to one-frame-late
# tracking (0.99), half the weight; the brick positions, the other half; and, with vision,
# pixels (per pixel, scaled by the image area so the scale suits any size).
BODY_GROUPS = ((('arm_pos', 'pinch_rmat'), 0.2, 0.5),  # Joint angles (sin, cos), wrist.
               (('pinch_pos',), 0.2, 50.0),  # 3 cm off: 0.96, 10 cm: 0.61.
               (('hand_pos',), 0.1, 2.0))  # Finger angles (rad).
OBJECT_WEIGHT, OBJECT_SCALE = 0.5, 200.0  # 5 cm off: 0.61.
PIXEL_SCALE = 100.0
CAMERA = cameras.FRONT_CLOSE.name
PIXELS = 'pixels'
_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, ctrl, mocap, warmstart.
# Every composer observable off: the environment reads the physics itself.
_OFF = observations.ObservableSpec(enabled=False, update_interval=1, buffer_size=1,
                                   delay=0, aggregator=None, corruptor=None)
_NO_OBSERVABLES = observations.ObservationSettings(
    proprio=_OFF, ftt=_OFF, prop_pose=_OFF,
    camera=observations.CameraObservableSpec(height=1, width=1, **_OFF._asdict()))

# dm_control has no public way to reach the Stack tasks' workspace, their stud-to-hole
# measure or a task's bricks: the only private accesses are these three.
# pylint: disable=protected-access
_WORKSPACE = bricks._WORKSPACE
_stud_to_hole_distance = bricks._min_stud_to_hole_distance


def _task_bricks(task: bricks.Stack) -> Tuple[composer.Entity, ...]:
  return tuple(task._bricks)
# pylint: enable=protected-access


def brick_keys(index: int) -> Tuple[str, str]:
  """The observation keys of brick `index`'s position and orientation."""
  return f'brick{index}_pos', f'brick{index}_quat'


def joint_angle_difference(arm_pos_a: np.ndarray, arm_pos_b: np.ndarray) -> np.ndarray:
  """Per-joint angle a - b in (-pi, pi], from two `arm_pos` (sin, cos) observations."""
  sin_a, cos_a = np.split(np.asarray(arm_pos_a, np.float64), 2, axis=-1)
  sin_b, cos_b = np.split(np.asarray(arm_pos_b, np.float64), 2, axis=-1)
  return np.arctan2(sin_a * cos_b - cos_a * sin_b, cos_a * cos_b + sin_a * sin_b)


class StackTask(bricks.Stack):
  """dm_control's Stack task with the sparse reward; the shaped one stays available."""

  def __init__(self, num_bricks: int):
    super().__init__(
        arena=arenas.Standard(),
        arm=robots.make_arm(obs_settings=_NO_OBSERVABLES),
        hand=robots.make_hand(obs_settings=_NO_OBSERVABLES),
        num_bricks=num_bricks,
        target_height=num_bricks,
        moveable_base=False,
        randomize_order=False,
        obs_settings=_NO_OBSERVABLES,
        workspace=_WORKSPACE,
        control_timestep=CONTROL_TIMESTEP)
    self._brick_ids = None
    self._hand_ids = None
    # A captured state the next reset starts from, set while an environment restores it.
    self.pending_state: Optional[Mapping[str, np.ndarray]] = None

  @property
  def bricks(self):
    """The bricks, bottom (fixed) first, in stacking order."""
    return _task_bricks(self)

  def after_compile(self, physics, random_state):
    super().after_compile(physics, random_state)
    self._brick_ids = set()
    for brick in self.bricks:
      self._brick_ids.update(physics.bind(brick.mjcf_model.find_all('geom')).element_id)
    hand_geoms = self.hand.mjcf_model.find_all('geom')
    self._hand_ids = set(physics.bind(hand_geoms).element_id)

  def seated_bricks(self, physics) -> np.ndarray:
    """For each brick above the base, whether it is clicked onto the one below."""
    return np.array([_stud_to_hole_distance(physics, bottom, top) < STACK_TOLERANCE
                     for bottom, top in zip(self.bricks[:-1], self.bricks[1:])])

  def hand_touches_brick(self, physics) -> bool:
    """Whether any hand or finger geom is in contact with any brick."""
    contact = physics.data.contact
    for geom1, geom2 in zip(contact.geom1, contact.geom2):
      if ((geom1 in self._hand_ids and geom2 in self._brick_ids) or
          (geom2 in self._hand_ids and geom1 in self._brick_ids)):
        return True
    return False

  def is_stacked(self, physics) -> bool:
    """Every brick sits on the one below it and the hand has let go."""
    return bool(np.all(self.seated_bricks(physics))
                and not self.hand_touches_brick(physics))

  def initialize_episode(self, physics, random_state):
    """The Stack's random set-up (placing the bricks, settling them, inverse kinematics
    for the arm: most of a reset's cost), unless a pending state will replace it."""
    if self.pending_state is None:
      super().initialize_episode(physics, random_state)

  def get_reward(self, physics):
    return float(self.is_stacked(physics))

  def shaped_reward(self, physics) -> float:
    """dm_control's shaped stacking reward, in (0, 1] (a diagnostic)."""
    return float(super().get_reward(physics))


class JacoStackEnvironment(dm_env.Environment):
  """The stacking task as a dm_env: flat float32 (uint8 pixels) dict observations."""

  def __init__(self, num_bricks: int, seed: int, time_limit: float,
               vision: bool, image_size: int):
    self._task = StackTask(num_bricks)
    self._environment = composer.Environment(
        self._task, time_limit=time_limit, random_state=np.random.RandomState(seed),
        recompile_mjcf_every_episode=False, strip_singleton_obs_buffer_dim=True)
    self._environment.add_extra_hook('initialize_episode', self._apply_pending_state)
    self._vision = vision
    self._image_size = image_size
    self._environment.reset()
    self._spec = {k: specs.Array(v.shape, v.dtype, k)
                  for k, v in self._observation().items()}

  @property
  def physics(self):
    return self._environment.physics

  @property
  def task(self) -> StackTask:
    return self._task

  def reset(self) -> dm_env.TimeStep:
    self._environment.reset()
    return dm_env.restart(self._observation())

  def step(self, action: np.ndarray) -> dm_env.TimeStep:
    timestep = self._environment.step(action)
    if timestep.first():  # The composer environment reset itself after a last step.
      return dm_env.restart(self._observation())
    return timestep._replace(observation=self._observation(),
                             reward=np.float32(timestep.reward),
                             discount=np.float32(timestep.discount))

  def capture_state(self) -> Dict[str, np.ndarray]:
    """The physics state and the model poses that episode set-up randomises."""
    model, data = self.physics.model.ptr, self.physics.data.ptr
    state = np.empty(mujoco.mj_stateSize(model, _STATE_SPEC), np.float64)
    mujoco.mj_getState(model, data, state, _STATE_SPEC)
    # The fixed base brick is placed by moving its body in the model.
    return {'physics': state, 'body_pos': model.body_pos.copy(),
            'body_quat': model.body_quat.copy()}

  def restore_state(self, state: Mapping[str, np.ndarray]) -> dm_env.TimeStep:
    """Starts an episode at a captured state; returns its first timestep."""
    self._task.pending_state = state
    try:
      return self.reset()
    finally:
      self._task.pending_state = None

  def _apply_pending_state(self, physics, random_state) -> None:
    """Runs inside the composer's reset context, after the task's and the entities'
    set-up."""
    del random_state
    state = self._task.pending_state
    if state is None:
      return
    model, data = physics.model.ptr, physics.data.ptr
    physics_state = np.asarray(state['physics'], np.float64)
    expected = mujoco.mj_stateSize(model, _STATE_SPEC)
    if physics_state.shape != (expected,):
      raise ValueError(f'physics state has shape {physics_state.shape}, this '
                       f'environment needs ({expected},)')
    model.body_pos[:] = state['body_pos']
    model.body_quat[:] = state['body_quat']
    mujoco.mj_setState(model, data, physics_state, _STATE_SPEC)

  def seated_bricks(self) -> np.ndarray:
    """For each brick above the base, whether it is clicked onto the one below now."""
    return self._task.seated_bricks(self.physics)

  def is_stacked(self) -> bool:
    """Whether the stack stands now, with the hand off it (the task reward is 1)."""
    return self._task.is_stacked(self.physics)

  def shaped_reward(self) -> float:
    """dm_control's shaped stacking reward for the current state (a diagnostic)."""
    return self._task.shaped_reward(self.physics)

  def _observation(self) -> Dict[str, np.ndarray]:
    physics = self.physics
    arm = physics.bind(self._task.arm.joints)
    hand = physics.bind(self._task.hand.joints)
    pinch = physics.bind(self._task.hand.pinch_site)
    observation = {
        'arm_pos': np.concatenate([np.sin(arm.qpos), np.cos(arm.qpos)]),
        'arm_vel': arm.qvel,
        'hand_pos': hand.qpos,
        'hand_vel': hand.qvel,
        'pinch_pos': pinch.xpos,
        'pinch_rmat': pinch.xmat,
    }
    for i, brick in enumerate(self._task.bricks):
      frame = physics.bind(mjcf.get_attachment_frame(brick.mjcf_model))
      position_key, quaternion_key = brick_keys(i)
      observation[position_key] = frame.xpos
      observation[quaternion_key] = frame.xquat
    observation = {k: np.array(v, np.float32) for k, v in observation.items()}
    if self._vision:
      observation[PIXELS] = physics.render(self._image_size, self._image_size,
                                           camera_id=CAMERA)
    return observation

  def observation_spec(self):
    return dict(self._spec)

  def action_spec(self):
    return self._environment.action_spec().replace(dtype=np.float32)  # As the policy's.

  def reward_spec(self):
    return specs.Array((), np.float32, keys.TASK)

  def discount_spec(self):
    return specs.BoundedArray((), np.float32, 0.0, 1.0, 'discount')

  def close(self):
    self._environment.close()


class JacoStackDomain(base.Domain):
  """Jaco block stacking; a demonstration is one scripted stack."""

  name = 'jaco_stack'
  trajectory_key = 'pinch_pos'

  def __init__(self, num_bricks: int = 2, vision: bool = False, image_size: int = 64,
               time_limit: Optional[float] = None):
    """Configures the domain.

    Args:
      num_bricks: bricks to stack, 2 or 3.
      vision: whether observations include the front camera's pixels.
      image_size: the camera image's height and width.
      time_limit: seconds per raw episode; None: as long as a demonstration.
    """
    if num_bricks not in (2, 3):
      raise ValueError(f'num_bricks must be 2 or 3, got {num_bricks}')
    if image_size < 16:
      raise ValueError(f'image_size must be at least 16, got {image_size}')
    self.num_bricks = num_bricks
    self.vision = vision
    self.image_size = image_size
    self.demo_length = DEMO_LENGTH[num_bricks]
    self.time_limit = (self.demo_length * CONTROL_TIMESTEP if time_limit is None
                       else time_limit)
    brick_position_keys = tuple(brick_keys(i)[0] for i in range(num_bricks))
    groups = [FeatureGroup(keys, weight, scale) for keys, weight, scale in BODY_GROUPS]
    groups.append(FeatureGroup(brick_position_keys, OBJECT_WEIGHT, OBJECT_SCALE))
    if vision:  # Body, bricks and pixels a third each.
      groups = [FeatureGroup(g.keys, g.weight * 2 / 3, g.scale) for g in groups]
      groups.append(FeatureGroup((PIXELS,), 1 / 3, PIXEL_SCALE / image_size**2))
    self.default_reward_groups = tuple(groups)

  def make_environment(self, seed: int,
                       time_limit: Optional[float] = None) -> JacoStackEnvironment:
    return JacoStackEnvironment(
        self.num_bricks, seed,
        time_limit=self.time_limit if time_limit is None else time_limit,
        vision=self.vision, image_size=self.image_size)

  def capture_state(self, environment: JacoStackEnvironment) -> Dict[str, np.ndarray]:
    return environment.capture_state()

  def restore_state(self, environment: JacoStackEnvironment,
                    state: Mapping[str, np.ndarray]) -> dm_env.TimeStep:
    return environment.restore_state(state)

  def tracking_errors(self, observation: Mapping[str, np.ndarray],
                      demo_frame: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Pinch-site and free-brick position errors (cm), mean arm joint error (rad)."""
    distance = lambda key: float(np.linalg.norm(observation[key] - demo_frame[key]))
    free_bricks = [brick_keys(i)[0] for i in range(1, self.num_bricks)]
    return {
        'pinch_error_cm': 100 * distance('pinch_pos'),
        'brick_error_cm': 100 * float(np.mean([distance(k) for k in free_bricks])),
        'arm_joint_error_rad': float(np.mean(np.abs(
            joint_angle_difference(observation['arm_pos'], demo_frame['arm_pos'])))),
    }
