"""A point-mass demonstrator that follows a random smooth path towards the target."""

import dm_env
import numpy as np

from metamimic_jax.demonstrators import base
from metamimic_jax.environments import base as env_base

_CONTROL_DT = 0.04
_FORCE_PER_ACTION = 0.1  # Actuator gear.
_DAMPING = 1.0  # Joint damping: holding speed v takes force DAMPING * v.
_LIMIT = 0.25  # Waypoints stay inside the arena's walls (at 0.29).
_MAX_SPEED = 0.08  # The actuators hold at most 0.1 m/s against the damping.


class SmoothPathDemonstrator(base.Demonstrator):
  """Tracks a smooth path through random waypoints, ending at the target (origin).

  Every seed draws a different number of waypoints, their places and the speed, so every
  demonstration is a different skill. Smooth action noise makes it imperfect.
  """

  def __init__(self, seed: int, domain: env_base.Domain,
               environment: dm_env.Environment, noise_scale: float = 0.15,
               kp: float = 20.0, kd: float = 5.0):
    del environment  # It needs only the observations.
    self._rng = np.random.default_rng(seed)
    self._episode_length = domain.demo_length
    self._noise_scale = noise_scale
    self._kp, self._kd = kp, kd

  def reset(self, timestep: dm_env.TimeStep) -> None:
    start = np.asarray(timestep.observation['position'], np.float64)
    num_waypoints = self._rng.integers(1, 4)
    fractions = np.arange(1, num_waypoints + 1) / (num_waypoints + 1)
    waypoints = [start + f * (0.0 - start) + self._rng.normal(0, 0.05, 2)
                 for f in fractions]
    points = np.stack([start] + waypoints + [np.zeros(2)])
    points = np.clip(points, -_LIMIT, _LIMIT)
    lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    # Aim to arrive after 50-85% of the episode, within what the actuators can hold.
    arrival = self._rng.uniform(0.5, 0.85) * self._episode_length * _CONTROL_DT
    speed = np.clip(lengths.sum() / arrival, 0.02, _MAX_SPEED)
    durations = np.maximum(lengths / speed, 0.2)
    self._points, self._times = points, np.concatenate([[0.0], np.cumsum(durations)])
    self._t = 0
    self._noise = np.zeros(2)

  def _reference(self, time: float):
    """Position and velocity on the path, smoothstep-eased between waypoints."""
    if time >= self._times[-1]:
      return self._points[-1], np.zeros(2)
    k = np.searchsorted(self._times, time, side='right') - 1
    duration = self._times[k + 1] - self._times[k]
    s = (time - self._times[k]) / duration
    ease, ease_rate = 3 * s**2 - 2 * s**3, (6 * s - 6 * s**2) / duration
    delta = self._points[k + 1] - self._points[k]
    return self._points[k] + ease * delta, ease_rate * delta

  def step(self, timestep: dm_env.TimeStep) -> np.ndarray:
    self._t += 1
    position_ref, velocity_ref = self._reference(self._t * _CONTROL_DT)
    position = timestep.observation['position']
    velocity = timestep.observation['velocity']
    feedforward = _DAMPING * velocity_ref / _FORCE_PER_ACTION
    action = (feedforward + self._kp * (position_ref - position)
              + self._kd * (velocity_ref - velocity))
    self._noise = 0.8 * self._noise + self._rng.normal(0, self._noise_scale, 2)
    return np.clip(action + self._noise, -1.0, 1.0).astype(np.float32)
