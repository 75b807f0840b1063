"""absl flags for the agent's hyperparameters, shared by every entry point.

`--preset` picks a named MetaMimicConfig; every other flag given on the command line
overrides that field of the preset.
"""

import dataclasses
from typing import List

from absl import app
from absl import flags

from metamimic_jax.config import (COMPUTE_DTYPES, NORMALIZATIONS, PRESETS, TORSOS,
                                  MetaMimicConfig)

_PRESET = flags.DEFINE_enum('preset', None, list(PRESETS),
                            'Named agent settings; the flags below override them '
                            "(default: 'paper', or as the entry point says).")
_FIELD_FLAGS = {
    'batch_size': flags.DEFINE_integer(
        'batch_size', None, 'Learner batch size (split over devices).', lower_bound=1),
    'learning_rate': flags.DEFINE_float('learning_rate', None, 'Adam step size.',
                                        lower_bound=0),
    'policy_learning_rate': flags.DEFINE_float(
        'policy_learning_rate', None, "The policies' Adam step size (default: "
        '--learning_rate).', lower_bound=0),
    'learning_rate_decay_steps': flags.DEFINE_integer(
        'learning_rate_decay_steps', None, 'If set, each step size decays (cosine) to '
        '--final_learning_rate_fraction of it over this many of its updates.',
        lower_bound=1),
    'final_learning_rate_fraction': flags.DEFINE_float(
        'final_learning_rate_fraction', None, 'Where a decayed step size ends, as a '
        'fraction of its start.', lower_bound=0, upper_bound=1),
    'samples_per_insert': flags.DEFINE_float(
        'samples_per_insert', None, 'Replay ratio: samples per inserted transition.',
        lower_bound=1e-3),
    'min_replay_size': flags.DEFINE_integer(
        'min_replay_size', None, 'Transitions in replay before learning.', lower_bound=1),
    'sigma': flags.DEFINE_float('sigma', None, 'Gaussian exploration noise '
                                '(half-ranges).', lower_bound=0),
    'episode_min_sigma': flags.DEFINE_float(
        'episode_min_sigma', None, 'If set, each episode draws its sigma log-uniformly '
        'from [episode_min_sigma, sigma].', lower_bound=0),
    'n_step': flags.DEFINE_integer('n_step', None, 'n of the n-step returns.',
                                   lower_bound=1),
    'discount': flags.DEFINE_float('discount', None, 'Discount, in [0, 1).',
                                   lower_bound=0, upper_bound=1),
    'vmax': flags.DEFINE_float('vmax', None, 'Largest value of the critic support '
                               '(default: the largest return, 1 / (1 - discount)).'),
    'policy_layer_sizes': flags.DEFINE_list('policy_layers', None,
                                            'Policy torso layer sizes.'),
    'critic_layer_sizes': flags.DEFINE_list('critic_layers', None,
                                            'Critic torso layer sizes.'),
    'policy_torso': flags.DEFINE_enum(
        'policy_torso', None, TORSOS, "Policy torso: 'mlp' (sized by --policy_layers) "
        'or a residual torso, small to large.'),
    'critic_torso': flags.DEFINE_enum(
        'critic_torso', None, TORSOS, "Critic torso: 'mlp' (sized by --critic_layers) "
        'or a residual torso, small to large.'),
    'normalization': flags.DEFINE_enum('normalization', None, NORMALIZATIONS,
                                       'Normalization in every torso.'),
    'compute_dtype': flags.DEFINE_enum(
        'compute_dtype', None, COMPUTE_DTYPES,
        'Network compute dtype; parameters and losses stay float32.'),
    'goal_horizon': flags.DEFINE_integer(
        'goal_horizon', None, 'Decisions ahead whose demo frames are shown as the goal.',
        lower_bound=1),
    'goal_relative_features': flags.DEFINE_boolean(
        'goal_relative_features', None, 'Also feed goal minus observation.'),
    'privileged_critic': flags.DEFINE_boolean(
        'privileged_critic', None, 'The critics read features only (the demo frame\'s '
        'included), never images; the policy sees the goal as before.'),
    'action_repeat': flags.DEFINE_integer(
        'action_repeat', None, 'Frames each action is held for.', lower_bound=1),
    'policy_preactivation_penalty': flags.DEFINE_float(
        'policy_preactivation_penalty', None, 'Weight of the mean squared pre-tanh '
        'policy output in the policy loss (keeps the policy off its bounds).',
        lower_bound=0),
    'policy_warmup_steps': flags.DEFINE_integer(
        'policy_warmup_steps', None, 'Learner steps that train only the critics.',
        lower_bound=0),
    'train_task_policy': flags.DEFINE_boolean(
        'train_task_policy', None, 'Also learn the task policy off-policy.'),
}


def _layers(values, name):
  try:
    sizes = tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f'--{name} must be comma-separated integers, got {values}')
  if not sizes or min(sizes) < 1:
    raise app.UsageError(f'--{name} needs at least one positive size, got {values}')
  return sizes


def preset_name(default: str = 'paper') -> str:
  """The --preset given, else `default`."""
  return _PRESET.value or default


def preset_given() -> bool:
  return _PRESET.present


def config_flag_arguments() -> List[str]:
  """The agent flags given on this command line, to pass on to another entry point."""
  return [flag.serialize() for flag in (_PRESET, *_FIELD_FLAGS.values()) if flag.present]


def config_from_flags(default_preset: str = 'paper') -> MetaMimicConfig:
  """The preset's MetaMimicConfig (--preset, else `default_preset`) with the given flags
  applied; UsageError if bad."""
  overrides = {}
  for field, flag in _FIELD_FLAGS.items():
    if flag.value is None:
      continue
    overrides[field] = (_layers(flag.value, flag.name) if field.endswith('layer_sizes')
                        else flag.value)
  try:
    return dataclasses.replace(PRESETS[preset_name(default_preset)], **overrides)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
