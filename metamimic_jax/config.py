"""MetaMimic configuration: D4PG learner defaults plus the imitation-specific fields."""

import dataclasses
from typing import Optional, Tuple

# Torsos: MLP_TORSO is Acme's D4PG LayerNorm MLP sized by `*_layer_sizes` (with, for
# pixels, the small residual conv torso of `conv_channels`); the others are residual
# torsos of the sizes below (see networks.py).
MLP_TORSO = 'mlp'
NORMALIZATIONS = ('none', 'layer', 'group')
NORM_GROUPS = 8  # Groups of GroupNorm: every normalized width must divide by it.
COMPUTE_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class TorsoSize:
  """A residual torso: an MLP for features, an IMPALA-style conv net for pixels."""
  width: int  # Features: the MLP's width ...
  blocks: int  # ... and its residual blocks (two Linear layers each).
  conv_channels: Tuple[int, ...]  # Pixels: one stage per entry (conv, max-pool) ...
  conv_blocks: int  # ... with this many residual blocks (two convs each) per stage,
  embedding_size: int  # then one Linear layer to this size.


TORSO_SIZES = {
    'small': TorsoSize(width=256, blocks=1, conv_channels=(16, 32, 32), conv_blocks=1,
                       embedding_size=256),
    'medium': TorsoSize(width=1024, blocks=2, conv_channels=(32, 64, 64), conv_blocks=2,
                        embedding_size=512),
    'large': TorsoSize(width=2048, blocks=3, conv_channels=(64, 128, 128),
                       conv_blocks=2, embedding_size=1024),
}
TORSOS = (MLP_TORSO, *TORSO_SIZES)

# Every reward lies in [0, MAX_REWARD]: the imitation reward's group weights sum to 1 and
# the task reward is sparse (0 or 1). The value support must cover the returns this allows.
MAX_REWARD = 1.0


@dataclasses.dataclass(frozen=True)
class FeatureGroup:
  """One term beta * exp(-scale * ||o - d||^2) of the imitation reward."""
  keys: Tuple[str, ...]
  weight: float  # beta_k; the weights of all groups sum to 1.
  scale: float  # w_k.


@dataclasses.dataclass(frozen=True)
class MetaMimicConfig:
  """Hyperparameters; defaults follow Acme's D4PG where the paper is silent."""
  # Learner.
  learning_rate: float = 1e-4
  policy_learning_rate: Optional[float] = None  # None: learning_rate.
  # Set: each step size follows a cosine from its value down to
  # final_learning_rate_fraction of it over this many of its optimizer's updates (a
  # policy's start after its warm-up), then stays there: precision late in a run.
  learning_rate_decay_steps: Optional[int] = None
  final_learning_rate_fraction: float = 0.1
  discount: float = 0.99
  n_step: int = 5
  batch_size: int = 256
  target_update_period: int = 100
  num_atoms: int = 51
  vmin: float = 0.0  # Rewards are non-negative ...
  # ... and returns at most MAX_REWARD / (1 - discount): None derives vmax from that.
  vmax: Optional[float] = None
  clipping: bool = True  # Clip dQ/da in the policy loss (as Acme's D4PG).
  # Weight of the mean squared pre-tanh policy output in the policy loss (0: D4PG's).
  policy_preactivation_penalty: float = 0.0
  # Learner steps that train only the critics, before the policies start to follow them.
  policy_warmup_steps: int = 0
  # SGD steps per device call (lax.scan over that many batches): fewer dispatches.
  sgd_steps_per_call: int = 1

  # Replay.
  samples_per_insert: float = 32.0
  samples_per_insert_tolerance_rate: float = 0.1
  min_replay_size: int = 1000
  max_replay_size: int = 1_000_000
  prefetch_size: int = 4
  replay_table_name: str = 'priority_table'

  # Acting.
  sigma: float = 0.3  # Gaussian exploration noise, in units of the action range / 2.
  # Set: each episode explores with a sigma drawn log-uniformly from
  # [episode_min_sigma, sigma], so replay holds states near the demonstrations (small
  # sigma) as well as actions whose effect the critic can measure (large sigma).
  episode_min_sigma: Optional[float] = None

  # Networks.
  policy_layer_sizes: Tuple[int, ...] = (256, 256, 256)
  critic_layer_sizes: Tuple[int, ...] = (512, 512, 256)
  conv_channels: Tuple[int, ...] = (16, 32, 32)  # Residual conv torso for pixels.
  policy_torso: str = MLP_TORSO  # One of TORSOS.
  critic_torso: str = MLP_TORSO
  normalization: str = 'layer'  # In every torso; one of NORMALIZATIONS.
  # 'bfloat16': the networks compute in bfloat16; parameters and losses stay float32.
  compute_dtype: str = 'float32'

  # Imitation.
  reward_groups: Tuple[FeatureGroup, ...] = ()  # Empty: the domain's defaults.
  goal_keys: Optional[Tuple[str, ...]] = None  # Demo frame keys fed as goal; None: all.
  # The critics read features only (the observation's and, for imitation, every feature
  # key of the demo frame), never images, while the policy still sees the demo as
  # goal_keys say: an asymmetric actor-critic. Only the policy acts, so imitating from
  # pixels stays pixels-only; the critic, which trains the policy, learns from features.
  privileged_critic: bool = False
  # Frames each action is held for; the imitation reward is their mean (1: the paper's).
  action_repeat: int = 1
  # The goal is the demo at the next goal_horizon decisions: frames f+k, .., f+Hk.
  goal_horizon: int = 1
  # Also feed the networks each goal frame minus the observation (keys in both): the
  # action's effect on the reward is then a simple function of the inputs.
  goal_relative_features: bool = False
  train_task_policy: bool = True  # Learn the task policy off-policy on the same memory.

  def __post_init__(self):
    if self.n_step < 1:
      raise ValueError(f'n_step must be >= 1, got {self.n_step}')
    if self.learning_rate_decay_steps is not None and self.learning_rate_decay_steps < 1:
      raise ValueError('learning_rate_decay_steps must be >= 1, got '
                       f'{self.learning_rate_decay_steps}')
    if not 0 < self.final_learning_rate_fraction <= 1:
      raise ValueError('final_learning_rate_fraction must lie in (0, 1], got '
                       f'{self.final_learning_rate_fraction:g}')
    if self.policy_warmup_steps < 0:
      raise ValueError(f'policy_warmup_steps must be >= 0, got {self.policy_warmup_steps}')
    if self.action_repeat < 1:
      raise ValueError(f'action_repeat must be >= 1, got {self.action_repeat}')
    if self.sgd_steps_per_call < 1:
      raise ValueError(f'sgd_steps_per_call must be >= 1, got {self.sgd_steps_per_call}')
    if self.goal_horizon < 1:
      raise ValueError(f'goal_horizon must be >= 1, got {self.goal_horizon}')
    if not 0 <= self.discount < 1:
      raise ValueError(f'discount must lie in [0, 1), got {self.discount} (episodes '
                       'bootstrap at their time limits, so returns need discounting)')
    if self.episode_min_sigma is not None and not 0 < self.episode_min_sigma <= self.sigma:
      raise ValueError(f'episode_min_sigma must lie in (0, sigma {self.sigma:g}], got '
                       f'{self.episode_min_sigma:g}')
    if self.vmax is not None and self.vmax <= self.vmin:
      raise ValueError(f'vmax ({self.vmax}) must exceed vmin ({self.vmin})')
    if self.vmax is not None and self.vmax < self.max_return * (1 - 1e-6):
      raise ValueError(
          f'vmax {self.vmax:g} is below the largest return the rewards can reach, '
          f'{self.max_return:g} = {MAX_REWARD:g} / (1 - discount {self.discount:g}); '
          'raise vmax or lower the discount')
    for name, value, allowed in (('policy_torso', self.policy_torso, TORSOS),
                                 ('critic_torso', self.critic_torso, TORSOS),
                                 ('normalization', self.normalization, NORMALIZATIONS),
                                 ('compute_dtype', self.compute_dtype, COMPUTE_DTYPES)):
      if value not in allowed:
        raise ValueError(f'unknown {name} {value!r}: choose one of {", ".join(allowed)}')
    if self.normalization == 'group':
      uneven = sorted({w for w in self.normalized_widths if w % NORM_GROUPS})
      if uneven:
        raise ValueError(f'group normalization needs widths divisible by {NORM_GROUPS} '
                         f'groups, got {uneven}')
    if self.reward_groups:
      total = sum(g.weight for g in self.reward_groups)
      if abs(total - 1.0) > 1e-6:
        raise ValueError(f'reward group weights must sum to 1, got {total}')

  @property
  def max_return(self) -> float:
    """The largest discounted return the rewards allow (bootstrapped episodes)."""
    return MAX_REWARD / (1.0 - self.discount)

  @property
  def normalized_widths(self) -> Tuple[int, ...]:
    """The widths that the torsos normalize."""
    widths = []
    for torso, layer_sizes in ((self.policy_torso, self.policy_layer_sizes),
                               (self.critic_torso, self.critic_layer_sizes)):
      if torso == MLP_TORSO:
        widths += [layer_sizes[0], *self.conv_channels]
      else:
        widths += [TORSO_SIZES[torso].width, *TORSO_SIZES[torso].conv_channels]
    return tuple(widths)

  @property
  def value_support(self) -> Tuple[float, float]:
    """(vmin, vmax) of the critic's atoms; vmax defaults to `max_return`."""
    return self.vmin, self.max_return if self.vmax is None else self.vmax


# Named settings: the D4PG defaults at paper-like scale, and the setting tuned for
# learning Jaco imitation on a 2-core CPU machine (see WORKSPACE_NOTES.md).
PRESETS = {
    'paper': MetaMimicConfig(),
    # Run L of WORKSPACE_NOTES.md's Jaco table: actions held 4 frames and wide
    # exploration so that the critic can tell what an action does, one-step returns (an
    # n-step return under that noise values the noise's next actions, not the policy's),
    # critic-only warm-up, and only the imitation agent (the task agent doubles the
    # learner's cost and learns nothing from Jaco's sparse reward at this budget;
    # --train_task_policy adds it).
    'cpu_small': MetaMimicConfig(
        policy_layer_sizes=(256, 256), critic_layer_sizes=(256, 256), discount=0.95,
        n_step=1, samples_per_insert=64.0, sigma=1.0, policy_preactivation_penalty=0.01,
        learning_rate=3e-4, policy_learning_rate=3e-5, action_repeat=4,
        policy_warmup_steps=5000, train_task_policy=False),
}
