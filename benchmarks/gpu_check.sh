#!/bin/bash
# Issue 11 item 4 on a GPU image with JAX (no Haiku): the learner's throughput against
# that GPU's matmul, and where the medium pixel step's time goes, in one command.
#   make gpu-wheels                     # here, once: Haiku and jmp for Python 3.12
#   bash benchmarks/gpu_check.sh [learner_throughput.py flags]
# With the device tool: carry ['.whl'], timeout_s 570. Output goes to throughput.txt
# and profile.txt under $OUT (default /tmp/gpu_check), written as it runs. $PYTHON
# (default python3) runs the benchmarks, with the wheels in $WHEELS (default .whl)
# installed first; $PROFILE_FLAGS replace learner_profile.py's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
WHEELS=${WHEELS:-.whl}
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" benchmarks/learner_throughput.py --torsos=medium,large --inputs=features,pixels \
  --dtypes=float32,bfloat16 --steps_per_call=1,4 --min_rounds=3 --cache_dir= "$@" \
  2>&1 | tee "$OUT/throughput.txt"
# shellcheck disable=SC2086  # The flags are words.
"$PYTHON" benchmarks/learner_profile.py ${PROFILE_FLAGS:---torso=medium --inputs=pixels} \
  2>&1 | tee "$OUT/profile.txt"
