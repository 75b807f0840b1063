"""benchmarks/learner_profile.py: HLO instructions' shapes, trace events summed by op,
and a tiny run that finds the step's ops in a real trace."""

import os
import re
import subprocess
import sys

import pytest

from benchmarks import learner_profile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HLO = """
%parallel_transpose_copy_fusion.164 (p.1: f32[8,4,4,2]) -> f32[2,4,4,8] {
  %p.1 = f32[8,4,4,2]{3,2,1,0} parameter(0)
  ROOT %transpose_copy_fusion.164.clone = f32[2,4,4,8]{3,2,1,0} fusion(%p.1), kind=kLoop, calls=%fused
}
ENTRY %main (Arg_0.1: f32[8,4,4,2]) -> (f32[2,4,4,8], f32[8,2]) {
  %call.1120 = f32[2,4,4,8]{3,2,1,0} call(%Arg_0.1), to_apply=%parallel_transpose_copy_fusion.164
  %reduce-window.7 = f32[8,2]{1,0} reduce-window(%Arg_0.1, %c), window={size=1x4x4x1}
  ROOT %tuple.3 = (f32[2,4,4,8]{3,2,1,0}, f32[8,2]{1,0}) tuple(%call.1120, %reduce-window.7)
}
"""


def test_instruction_shapes_name_each_array_valued_instruction_but_calls():
  assert learner_profile.instruction_shapes(HLO) == {
      'p.1': 'f32[8,4,4,2]',
      'transpose_copy_fusion.164.clone': 'f32[2,4,4,8]',
      'reduce-window.7': 'f32[8,2]',
  }


@pytest.mark.parametrize('instruction, op', [
    ('transpose_copy_fusion.164.clone', 'transpose_copy_fusion'),
    ('reduce-window.13126', 'reduce-window'),
    ('fusion.1.2', 'fusion'),
    ('dot', 'dot'),
])
def test_op_name_drops_the_instructions_number(instruction, op):
  assert learner_profile.op_name(instruction) == op


def test_op_times_sum_complete_events_by_op_and_shape_longest_first():
  shapes = {'fusion.1': 'f32[4]', 'fusion.2.clone': 'f32[4]', 'fusion.3': 'f32[8]',
            'dot.4': 'f32[4,4]'}
  events = [
      {'ph': 'X', 'name': 'fusion.1', 'ts': 0, 'dur': 1500},
      {'ph': 'X', 'name': 'fusion.2.clone', 'ts': 2000, 'dur': 2500},
      {'ph': 'X', 'name': 'fusion.3', 'ts': 5000, 'dur': 3000},
      {'ph': 'X', 'name': 'dot.4', 'ts': 9000, 'dur': 250},
      {'ph': 'X', 'name': 'dot.4', 'ts': 9500, 'dur': 250},
      {'ph': 'X', 'name': 'call.9', 'ts': 0, 'dur': 9000},  # Not an instruction named.
      {'ph': 'i', 'name': 'fusion.3', 'ts': 8000},  # Not a complete event.
  ]
  assert learner_profile.op_times(events, shapes) == [
      learner_profile.OpTime('fusion', 'f32[4]', 4.0, 2),
      learner_profile.OpTime('fusion', 'f32[8]', 3.0, 1),
      learner_profile.OpTime('dot', 'f32[4,4]', 0.5, 2),
  ]


@pytest.mark.slow
def test_tiny_run_lists_the_steps_ops_from_its_trace():
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'learner_profile.py'),
       '--torso=mlp', '--inputs=pixels', '--image_size=16', '--batch_size=4',
       '--timed_calls=1', '--top=1000'],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  listed = re.search(r'ops listed (\d+) ms in (\d+) events \((\d+) op x shape groups\)',
                     result.stdout)
  assert listed, result.stdout
  rows = lines[lines.index(next(l for l in lines if l.split()[:2] == ['ms', 'events'])) + 1:]
  assert len(rows) == int(listed.group(3)) > 0, result.stdout
  times = [float(row.split()[0]) for row in rows]
  assert times == sorted(times, reverse=True), result.stdout
  assert sum(int(row.split()[1]) for row in rows) == int(listed.group(2))
  # The conv torso's first max-pool (16 channels, 16 -> 8 px) is a reduce-window.
  assert any(row.split()[3:] == ['reduce-window', 'f32[4,8,8,16]'] for row in rows), (
      result.stdout)
