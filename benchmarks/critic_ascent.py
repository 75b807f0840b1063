r"""Where a trained imitation policy's tracking error comes from: bias, penalty or critic.

  .venv/bin/python benchmarks/critic_ascent.py --workdir=runs/bench_jaco_k \
      --demos=runs/jaco_demos/held_out.h5

On a saved run (experiments/train.py's or the program's checkpoints), imitates every
demonstration of --demos once, without noise, with:
  - the stationary policy (zero action), the bound from below;
  - the policy's own action (step size 0);
  - that action refined by --ascent_steps normalized gradient-ascent steps on the
    critic's Q(s, .) for each of --step_sizes (`critic_ascent.CriticAscentActor`).
and prints the imitation reward and tracking errors of each. If no step size tracks
better than the policy, the critic's action gradient is not accurate where the policy
acts: the critic, not the policy update, limits precision (a gain that is small next to
the policy's own over the stationary arm says the same). It also prints, for the
policy's own imitations, each feature's signed offset from the demonstration (a mean far
from zero is a bias, a spread around zero imprecision) and, in pre-tanh space, the
critic's gradient beside the pre-tanh penalty's (is the penalty holding the policy?).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import metamimic_jax  # Sets the process environment first.
from metamimic_jax import checkpointing
from metamimic_jax import cli
from metamimic_jax import critic_ascent
from metamimic_jax import demonstrations
from metamimic_jax import evaluation
from metamimic_jax import saved_runs

from absl import app
from absl import flags
from acme import specs
import numpy as np
import tqdm

_WORKDIR = flags.DEFINE_string('workdir', None, 'The saved run (its checkpoints).',
                               required=True)
_DEMOS = flags.DEFINE_string('demos', None, 'HDF5 demonstrations to imitate, e.g. the '
                             "run's held_out.h5.", required=True)
_STEP_SIZES = flags.DEFINE_list('step_sizes', ['0.01', '0.03', '0.1'],
                                'Ascent step lengths, in action units (the policy '
                                'itself, step 0, is always run).')
_ASCENT_STEPS = flags.DEFINE_integer('ascent_steps', 8, 'Ascent steps per decision.',
                                     lower_bound=1)
STATIONARY, POLICY = 'stationary (zero action)', 'policy'


def _positive_numbers(values) -> bool:
  try:
    return all(float(v) > 0 for v in values)
  except ValueError:
    return False


flags.register_validator('step_sizes', _positive_numbers,
                         '--step_sizes must be positive numbers')


def diagnose(workdir: str, demos_path: str, step_sizes, ascent_steps: int) -> dict:
  """Imitation summaries of the stationary policy, the run's policy and its refinements,
  the policy's signed feature offsets and its critic-penalty balance."""
  run = saved_runs.open_run(workdir)
  if run.builder.task_only:
    raise checkpointing.CheckpointError(
        f'{run.checkpoint_directory}: a task-only run has no imitation critic')
  environment = saved_runs.demo_environment(run, demos_path)
  demos = environment.demonstrations
  environment_spec = specs.make_environment_spec(environment)
  networks, learner = saved_runs.restore_learner(run, environment_spec)
  state = learner.save().imitation
  actors = {STATIONARY: evaluation.ConstantActor(
      np.zeros(environment_spec.actions.shape, np.float32))}
  for step_size in [0.0, *step_sizes]:
    label = POLICY if step_size == 0 else f'policy + ascent, step {step_size:g}'
    actors[label] = critic_ascent.CriticAscentActor(
        networks.imitation, state.policy_params, state.critic_params, environment_spec,
        step_size, ascent_steps, run.config.policy_preactivation_penalty)
  results, imitations = {}, {}
  with tqdm.tqdm(total=len(actors) * len(demos), desc='imitating',
                 unit='episode') as progress:
    for label, actor in actors.items():
      imitations[label] = []
      for index in range(len(demos)):
        imitations[label].append(evaluation.imitate(actor, environment, index))
        progress.update()
      results[label] = {**evaluation.summarize_imitations(imitations[label]),
                        'records': np.array(getattr(actor, 'records', []))}
  offsets = {key: evaluation.signed_offsets(imitations[POLICY], environment, key)
             for key in imitations[POLICY][0].observations}
  return {'domain': run.domain.name, 'num_demos': len(demos), 'results': results,
          'offsets': offsets, 'penalty': run.config.policy_preactivation_penalty}


def _report(diagnosis: dict, ascent_steps: int) -> None:
  results = diagnosis['results']
  errors = [k for k in results[STATIONARY] if k.endswith(('_cm', '_rad'))]
  print(f"\n{diagnosis['domain']}: {diagnosis['num_demos']} demos, one noise-free "
        f'imitation each; refinement: {ascent_steps} ascent steps on Q(s, .)')
  print('| actor | reward | ' + ' | '.join(errors) + ' | mean move | mean Q gain |')
  print('| --- | ---: | ' + ' | '.join('---:' for _ in errors) + ' | ---: | ---: |')
  for label, result in results.items():
    records = result['records']
    moves = ('', '') if not len(records) else (f'{records[:, 0].mean():.3f}',
                                               f'{records[:, 1].mean():+.4f}')
    print(f"| {label} | {result['imitation_reward']:.3f} | " +
          ' | '.join(f'{result[e]:.3f}' for e in errors) + f' | {moves[0]} | {moves[1]} |')
  policy = results[POLICY]
  refined = {label: r['imitation_reward'] for label, r in results.items()
             if label not in (STATIONARY, POLICY)}
  if refined:
    best = max(refined, key=refined.get)
    gain = refined[best] - policy['imitation_reward']
    stationary_gap = policy['imitation_reward'] - results[STATIONARY]['imitation_reward']
    print(f'best refinement: {best}, reward {gain:+.4f} against the policy '
          f"(the policy's own gain over the stationary arm: {stationary_gap:+.3f})")
  print('\nsigned offsets of the policy from the demos (feature units; bias share = '
        '|mean offset| / mean |offset|):')
  for key, offset in diagnosis['offsets'].items():
    flat = offset.reshape(len(offset), -1)
    error = np.linalg.norm(flat, axis=1).mean()
    bias = np.linalg.norm(flat.mean(0))
    print(f'  {key:<16} mean |offset| {error:.4f}  |mean offset| {bias:.4f}  '
          f'bias share {bias / max(error, 1e-12):.2f}')
  records = policy['records']
  print(f"\npre-tanh balance at the policy's actions (penalty {diagnosis['penalty']:g}): "
        f'median |dQ/du| {np.median(records[:, 2]):.4f}, median |penalty gradient| '
        f'{np.median(records[:, 3]):.4f}, median cos(dQ/du, -penalty gradient) '
        f'{np.median(records[:, 4]):+.2f}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  step_sizes = sorted({float(s) for s in _STEP_SIZES.value})
  try:
    diagnosis = diagnose(_WORKDIR.value, _DEMOS.value, step_sizes, _ASCENT_STEPS.value)
  except (checkpointing.CheckpointError,
          demonstrations.DemonstrationError) as e:
    sys.exit('error: ' + '; '.join(line.strip() for line in str(e).splitlines()))
  _report(diagnosis, _ASCENT_STEPS.value)


if __name__ == '__main__':
  cli.run(main)
