#!/usr/bin/env bash
# The study of docs/results.md: every experiment preset on real MNIST with the same short budget
# (budget=short: 10 epochs on the CPU, K = 100 importance samples for the log-likelihood) and
# one sample of z per image in training (five for IW-IELBO and IWAE), one run after another.
#
#   bash scripts/results_study.sh OUT_DIR [RUN ...]      # RUN: names below; default: all
#   python -m intvae.report OUT_DIR/* --out docs/results  # figures and table
#
# Each run goes to OUT_DIR/<name>; a run whose results.json says "completed" is skipped, so the
# script can be restarted. Extra Hydra overrides: STUDY_OVERRIDES="data.root=/path ...".
set -euo pipefail
out=${1:?usage: bash scripts/results_study.sh OUT_DIR [RUN ...]}
shift
declare -A runs=(
  [elbo]="experiment=paper_elbo_mnist"
  [ielbo_d0.005]="experiment=paper_ielbo_mnist delta=0.005"
  [ielbo_d0.01]="experiment=paper_ielbo_mnist delta=0.01"
  [ielbo_d0.1]="experiment=paper_ielbo_mnist delta=0.1"
  [ielbo_authors]="experiment=authors_ielbo"
  [irelbo_a0.5]="experiment=paper_irelbo_mnist alpha=0.5"
  [irelbo_a2]="experiment=paper_irelbo_mnist alpha=2.0"
  [iw_ielbo_k5]="experiment=paper_ielbo_mnist bound=iw_ielbo samples=5"
  [fix_dequantization]="experiment=fix_dequantization"
  [fix_gaussian_noise]="experiment=fix_gaussian_noise"
  [fix_std_floor]="experiment=fix_std_floor"
  [continuous_bernoulli]="experiment=likelihood_continuous_bernoulli"
  [logit_normal]="experiment=likelihood_logit_normal"
  [bins]="experiment=likelihood_bins"
  [binarized_elbo]="experiment=binarized_mnist_elbo samples=1"
  [binarized_iwae_k5]="experiment=binarized_mnist_iwae samples=5"
)
order=(elbo ielbo_d0.005 ielbo_d0.01 ielbo_d0.1 ielbo_authors irelbo_a0.5 irelbo_a2 iw_ielbo_k5
       fix_dequantization fix_gaussian_noise fix_std_floor continuous_bernoulli logit_normal bins
       binarized_elbo binarized_iwae_k5)
selected=("${@:-${order[@]}}")
for name in "${selected[@]}"; do
  overrides=${runs[$name]:?unknown run $name; known: ${order[*]}}
  dir=$out/$name
  if grep -qs '"status": "completed"' "$dir/results.json"; then
    echo "== $name: completed, skipped"; continue
  fi
  echo "== $name: $overrides"
  # samples=1 unless the run names its own (a later override wins).
  # shellcheck disable=SC2086
  python -m intvae.train samples=1 $overrides budget=short ${STUDY_OVERRIDES:-} \
    hydra.run.dir="$dir" || echo "== $name: failed (exit $?)"
done
