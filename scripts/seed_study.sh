#!/usr/bin/env bash
# The multi-seed study of issue 15: the core set of docs/results.md at the same short budget
# (budget=short: 10 epochs on the CPU, K = 100; one sample of z, five for IW-IELBO), three seeds
# each, plus the IRELBO on the IELBO's network and the IELBO on the IRELBO's, so that every
# comparison changes one thing at a time.
#
#   bash scripts/seed_study.sh RUNS_DIR [JOBS]     # JOBS runs at once (default 2, one thread each)
#
# The environment can narrow or stretch it (scripts/long_study.sh does): SEEDS (default "0 1 2"),
# NAMES (a subset of the configurations below, in that order), EPOCHS (default: the budget's 10)
# and SUMMARIES (default docs/results/seeds).
#
# Each run goes to RUNS_DIR/<name>/seed<k>. Rerunning the script continues where it stopped:
# a finished run is skipped by intvae-train itself (its results.json says completed), an
# unfinished one resumes from its last checkpoint. After each run its summary (results.json,
# metrics.csv, config.yaml: a few KB) is copied to docs/results/seeds/<name>/seed<k>/, the
# files the results page is built from (`intvae-report docs/results/seeds --out ...`).
set -euo pipefail
out=${1:?usage: bash scripts/seed_study.sh RUNS_DIR [JOBS]}
jobs=${2:-2}
summaries=${SUMMARIES:-docs/results/seeds}
seeds=${SEEDS:-0 1 2}
epochs=${EPOCHS:+trainer.max_epochs=$EPOCHS}
declare -A runs=(
  [elbo]="experiment=paper_elbo_mnist"
  [ielbo_d0.01]="experiment=paper_ielbo_mnist delta=0.01"
  [ielbo_d0.1]="experiment=paper_ielbo_mnist delta=0.1"
  [irelbo_a0.5_mlp2elu]="experiment=paper_ielbo_mnist bound=irelbo alpha=0.5"
  [irelbo_a2_mlp2elu]="experiment=paper_ielbo_mnist bound=irelbo alpha=2.0"
  [iw_ielbo_k5]="experiment=paper_ielbo_mnist bound=iw_ielbo samples=5"
  [fix_dequantization]="experiment=fix_dequantization"
  [fix_gaussian_noise]="experiment=fix_gaussian_noise"
  [fix_std_floor]="experiment=fix_std_floor"
  [logit_normal]="experiment=likelihood_logit_normal"
  [ielbo_authors]="experiment=authors_ielbo"
  [irelbo_a0.5_mlp1relu]="experiment=paper_irelbo_mnist alpha=0.5"
  [irelbo_a2_mlp1relu]="experiment=paper_irelbo_mnist alpha=2.0"
  [ielbo_d0.01_mlp1relu]="experiment=paper_ielbo_mnist model=mlp_200x1_relu_z25"
)
order=(elbo ielbo_d0.01 ielbo_d0.1 irelbo_a0.5_mlp2elu irelbo_a2_mlp2elu iw_ielbo_k5
       fix_dequantization fix_gaussian_noise fix_std_floor logit_normal ielbo_authors
       irelbo_a0.5_mlp1relu irelbo_a2_mlp1relu ielbo_d0.01_mlp1relu)
if [[ -n ${NAMES:-} ]]; then
  read -ra order <<< "$NAMES"
  for name in "${order[@]}"; do
    [[ -n ${runs[$name]:-} ]] || { echo "unknown configuration '$name'; known: ${!runs[*]}" >&2; exit 2; }
  done
fi

one_run() {  # NAME SEED
  local name=$1 seed=$2 dir="$out/$1/seed$2" keep="$summaries/$1/seed$2"
  if ! grep -qs '"status": "completed"' "$dir/results.json"; then
    # samples=1 unless the run names its own (the later override wins)
    # shellcheck disable=SC2086
    intvae-train samples=1 ${runs[$name]} budget=short $epochs seed="$seed" threads=1 \
      hydra.run.dir="$dir" > "$dir.log" 2>&1 || echo "== $name seed $seed: exit $?"
  fi
  if grep -qs '"status": "completed"' "$dir/results.json"; then
    mkdir -p "$keep"
    cp "$dir/results.json" "$dir/metrics.csv" "$dir/config.yaml" "$keep/"
    echo "== $name seed $seed: completed"
  fi
}
runs_serialized=$(declare -p runs)
export -f one_run
export out summaries epochs runs_serialized
mkdir -p "$out"
for seed in $seeds; do
  for name in "${order[@]}"; do
    mkdir -p "$out/$name"
    echo "$name $seed"
  done
done | xargs -P "$jobs" -L 1 bash -c 'eval "$runs_serialized"; one_run "$0" "$1"'
