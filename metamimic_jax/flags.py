"""absl flags for the agent's hyperparameters, shared by every entry point."""

from absl import app
from absl import flags

from metamimic_jax.config import MetaMimicConfig

_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Learner batch size (split over '
                                   'devices).', lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 1e-4, 'Adam step size.',
                                    lower_bound=0)
_SAMPLES_PER_INSERT = flags.DEFINE_float('samples_per_insert', 32.0,
                                         'Replay ratio: samples per inserted transition.',
                                         lower_bound=1e-3)
_MIN_REPLAY_SIZE = flags.DEFINE_integer('min_replay_size', 1000,
                                        'Transitions in replay before learning.',
                                        lower_bound=1)
_SIGMA = flags.DEFINE_float('sigma', 0.3, 'Gaussian exploration noise (half-ranges).',
                            lower_bound=0)
_N_STEP = flags.DEFINE_integer('n_step', 5, 'n of the n-step returns.', lower_bound=1)
_DISCOUNT = flags.DEFINE_float('discount', 0.99, 'Discount.', lower_bound=0,
                               upper_bound=1)
_VMAX = flags.DEFINE_float('vmax', None, 'Largest value of the critic support (default: '
                           'the largest return, 1 / (1 - discount)).')
_POLICY_LAYERS = flags.DEFINE_list('policy_layers', ['256', '256', '256'],
                                   'Policy torso layer sizes.')
_CRITIC_LAYERS = flags.DEFINE_list('critic_layers', ['512', '512', '256'],
                                   'Critic torso layer sizes.')
_GOAL_HORIZON = flags.DEFINE_integer('goal_horizon', 1,
                                     'Demo frames ahead shown as the goal.', lower_bound=1)
_TRAIN_TASK = flags.DEFINE_boolean('train_task_policy', True,
                                   'Also learn the task policy off-policy.')


def _layers(values, name):
  try:
    sizes = tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f'--{name} must be comma-separated integers, got {values}')
  if not sizes or min(sizes) < 1:
    raise app.UsageError(f'--{name} needs at least one positive size, got {values}')
  return sizes


def config_from_flags() -> MetaMimicConfig:
  """The MetaMimicConfig the command line asks for; UsageError for bad values."""
  try:
    return MetaMimicConfig(
        batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
        samples_per_insert=_SAMPLES_PER_INSERT.value,
        min_replay_size=_MIN_REPLAY_SIZE.value, sigma=_SIGMA.value,
        n_step=_N_STEP.value, discount=_DISCOUNT.value, vmax=_VMAX.value,
        policy_layer_sizes=_layers(_POLICY_LAYERS.value, 'policy_layers'),
        critic_layer_sizes=_layers(_CRITIC_LAYERS.value, 'critic_layers'),
        goal_horizon=_GOAL_HORIZON.value, train_task_policy=_TRAIN_TASK.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
