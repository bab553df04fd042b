#!/usr/bin/env bash
# The GPU check, unattended, on a machine with one GPU (about 8 minutes): from a fresh clone of
# this repository, install into a fresh venv, then
#   tests     the tests marked gpu (tests/test_cuda.py: the kernels on CUDA against the CPU's
#             float64 kernel, torch.compile on CUDA, bf16-mixed and 16-mixed training steps) and
#             tests/test_kernel_shapes.py, tests/test_precision.py
#   bounds    benchmarks/bounds.py --device cuda (each bound's cost relative to the ELBO)
#   training  benchmarks/training.py --device cuda (VAEModule in Lightning against a bare loop)
#   step      benchmarks/step.py --device cuda (the whole training step of the IELBO and the
#             IRELBO against the ELBO's, fresh and trained network)
#   eval      the K = 5000 evaluation of the 10,000 MNIST test images (benchmarks/evaluation.py,
#             chunks sized from the free GPU memory; synthetic images without the MNIST cache)
#   collapse  benchmarks/evaluation.py --collapse (a healthy and a collapsed decoder)
#   sweep     four short runs in parallel on the one GPU (intvae-train -m seed=0,1,2,3 with
#             hydra/launcher=joblib_gpus and INTVAE_RUNS_PER_GPU=4, generated data)
# and print one summary table (step, status, seconds, key number), also written to
# OUT/summary.txt beside each step's log OUT/<step>.log. Each step runs under its own timeout;
# a failed step is marked FAIL in the table, and the script then exits with status 1.
#
#   bash benchmarks/gpu_check.sh [--repo URL_OR_PATH | --checkout DIR] [--out DIR]
#       [--cpu-dry-run] [--isolated-venv]
#
#   --repo        clone this (default: the repository holding this script, its HEAD commit)
#   --checkout    use this checkout as it is (uncommitted files included), no clone
#   --out         where the logs and the summary go (default: a new folder under /tmp)
#   --cpu-dry-run the same steps on the CPU with tiny sizes (INTVAE_TEST_DEVICE=cpu for the gpu
#                 tests, trainer=cpu for the sweep): checks the plumbing on a machine without GPU
#   --isolated-venv  a venv of its own with pip and build isolation (pip downloads torch and
#                 the rest); by default the venv sees the system's site-packages and runs the
#                 system's pip and setuptools (>= 77) without build isolation, so that on a
#                 machine without network access what is installed there (torch with CUDA) is
#                 used and pip only installs what is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
repo=$here
checkout=
out=
dry=0
isolated=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --repo) repo=${2:?--repo needs a value}; shift 2 ;;
    --checkout) checkout=${2:?--checkout needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --cpu-dry-run) dry=1; shift ;;
    --isolated-venv) isolated=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d /tmp/intvae-gpu-check.XXXXXX)
out=${out:-$work/out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/summary.txt
rows=()
failed=0

export INTVAE_OFFLINE=1 WANDB_MODE=disabled WANDB_DIR=$work HYDRA_FULL_ERROR=1

row() {  # step status seconds key
  rows+=("$(printf '%-10s %-10s %8s  %s' "$1" "$2" "$3" "$4")")
}

print_summary() {
  {
    echo "# intvae GPU check ($([[ $dry == 1 ]] && echo 'CPU dry run' || echo 'GPU')), $(date -u +%FT%TZ)"
    echo "# source: ${checkout:-clone of $repo} ($(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?')); logs: $out"
    printf '%-10s %-10s %8s  %s\n' step status seconds key
    printf '%s\n' "${rows[@]}"
  } | tee "$summary"
}

# run STEP TIMEOUT KEY_COMMAND -- COMMAND...: COMMAND under timeout, its output in OUT/STEP.log;
# KEY_COMMAND (shell, reads the log on stdin) prints the step's key number.
run() {
  local step=$1 limit=$2 key=$3 status rc start seconds
  shift 4
  echo "== $step (timeout ${limit}s): $*" >&2
  start=$(date +%s.%N)
  if timeout --kill-after=15 "$limit" "$@" >"$out/$step.log" 2>&1; then
    status=ok
  else
    rc=$?
    status="FAIL($rc)"
    [[ $rc == 124 || $rc == 137 ]] && status="TIMEOUT"
    failed=1
    echo "!! $step failed ($status); the end of $out/$step.log:" >&2
    tail -n 20 "$out/$step.log" >&2
  fi
  seconds=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
    "$start" "$(date +%s.%N)")
  row "$step" "$status" "$seconds" "$(bash -c "$key" <"$out/$step.log" 2>/dev/null | tail -n 1 || true)"
}

# ----------------------------------------------------------------------------- source, venv
start=$(date +%s)
if [[ -n $checkout ]]; then
  src=$(cd "$checkout" && pwd)
else
  src=$work/intvae
  timeout 120 git clone --quiet "$repo" "$src"
fi
cd "$src"
py=$work/venv/bin/python
if [[ $isolated == 1 ]]; then
  python3 -m venv "$work/venv"
  install=("$py" -m pip install --quiet -e ".[dev,launchers]")
else  # the venv's own seeded setuptools would be too old for PEP 639 metadata
  python3 -m venv --system-site-packages --without-pip "$work/venv"
  install=("$py" -m pip install --quiet --no-build-isolation -e ".[dev,launchers]")
fi
if ! timeout 300 "${install[@]}" >"$out/install.log" 2>&1; then
  row install "FAIL" "$(($(date +%s) - start))" "pip install -e .[dev,launchers]: see install.log"
  tail -n 20 "$out/install.log" >&2
  print_summary
  exit 1
fi
row install ok "$(($(date +%s) - start))" \
  "$("$py" -c 'import torch; print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")')"
if [[ $dry == 0 ]] && ! "$py" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_check.sh: torch sees no CUDA device (use --cpu-dry-run on a machine without GPU)" >&2
  print_summary
  exit 1
fi

# ----------------------------------------------------------------------------- the steps
# key commands: read a step's log on stdin, print one line
passed='grep -E "^[0-9]+ passed|passed|failed" | tail -n 1 | sed "s/=//g; s/^ *//"'
ratios='awk '"'"'{name = substr($0, 1, 22); sub(/ +$/, "", name); split(substr($0, 23), f, " ")}
  name == "ielbo" || name == "irelbo (alpha=2)" {key = key sep name " x" f[2] " ELBO"; sep = "; "}
  END {print key}'"'"
training='awk '"'"'$1 == "ielbo" {print "ielbo: bare " $2 ", package " $3 " steps/s"}'"'"
step='awk '"'"'($1 == "fresh" || $1 == "trained") && $2 != "elbo" {key = key sep $1 " " $2 " x" $4; sep = "; "}
  END {print key " ELBO step"}'"'"
evaluation() {  # K: the key command of the eval step
  echo "awk -v K=$1 '\$1 == \"chunked:auto\" {printf \"%.1f s per 10,000 images at K = %s\\n\", 10 * \$3, K}'"
}
collapse='awk -F"  +" '"'"'/^(healthy|collapsed),/ {rate = rate sep $2; fast = fast sep $4; sep = "/"}
  END {print "img/s " rate "; fast path " fast " (healthy fixed/bins, collapsed fixed/bins)"}'"'"
sweep='cat >/dev/null; '"$py"' -c "
import json, pathlib, sys
runs = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1]).glob(\"*/results.json\")]
done = [r for r in runs if r.get(\"status\") == \"completed\"]
ll = [r.get(\"test_log_likelihood\") for r in done if r.get(\"test_log_likelihood\") is not None]
print(f\"{len(done)}/4 completed; test log P(I) {min(ll):.1f} .. {max(ll):.1f}\" if ll else f\"{len(done)}/4 completed\")
" '"$out/sweep"

if [[ $dry == 1 ]]; then
  device=cpu
  export INTVAE_TEST_DEVICE=cpu
  run tests 300 "$passed" -- "$py" -m pytest -q -p no:cacheprovider -m "not slow" \
    tests/test_cuda.py tests/test_kernel_shapes.py tests/test_precision.py
  run bounds 240 "$ratios" -- "$py" benchmarks/bounds.py --device $device --rounds 2 --batch 10 \
    --samples 2 --train-steps 2
  run training 240 "$training" -- "$py" benchmarks/training.py --device $device --rounds 1 \
    --steps 3 --warmup 1 --batch 10 --samples 2 --bounds ielbo --no-compile
  run step 240 "$step" -- "$py" benchmarks/step.py --device $device --rounds 1 --steps 2 \
    --warmup 1 --epoch-steps 2 --no-compile
  run eval 240 "$(evaluation 50)" -- "$py" benchmarks/evaluation.py --device $device \
    --images 20 --samples 50 --variants chunked:auto --rounds 1 --no-compile
  run collapse 240 "$collapse" -- "$py" benchmarks/evaluation.py --collapse --device $device \
    --collapse-images 20 --collapse-samples 4 --rounds 1 --no-compile
  trainer=cpu
  sweep_size=(data.sizes.train=64 data.sizes.val=32 data.sizes.test=32 data.batch_size=32
              evaluate.samples=4 compile=false)
else
  device=cuda
  run tests 150 "$passed" -- "$py" -m pytest -q -p no:cacheprovider -m "not slow" \
    tests/test_cuda.py tests/test_kernel_shapes.py tests/test_precision.py
  run bounds 60 "$ratios" -- "$py" benchmarks/bounds.py --device $device --compile \
    --train-steps 300 --rounds 10
  run training 60 "$training" -- "$py" benchmarks/training.py --device $device --rounds 3 \
    --steps 30 --bounds elbo ielbo
  run step 60 "$step" -- "$py" benchmarks/step.py --device $device --rounds 3 --steps 20 \
    --epoch-steps 200
  run eval 90 "$(evaluation 5000)" -- "$py" benchmarks/evaluation.py --device $device \
    --images 10000 --samples 5000 --variants chunked:auto --rounds 1
  run collapse 40 "$collapse" -- "$py" benchmarks/evaluation.py --collapse --device $device \
    --collapse-images 1000 --collapse-samples 500 --rounds 1
  trainer=gpu
  sweep_size=(evaluate.samples=100)
fi
INTVAE_RUNS_PER_GPU=4 run sweep 120 "$sweep" -- "$work/venv/bin/intvae-train" -m seed=0,1,2,3 \
  experiment=smoke budget=short trainer=$trainer trainer.max_epochs=1 \
  hydra/launcher=joblib_gpus "hydra.sweep.dir=$out/sweep" "${sweep_size[@]}"

print_summary
if [[ $failed == 1 ]]; then
  echo "gpu_check.sh: some steps FAILED (logs in $out)" >&2
  exit 1
fi
