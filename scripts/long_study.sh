#!/usr/bin/env bash
# The long runs of issue 15 (docs/results.md, "A hundred epochs"): the three best configurations
# of the seed study (IW-IELBO K = 5, the logit-normal, the IELBO at delta 0.1), the ELBO, and the
# two that test the paper's claims: the IRELBO (alpha 0.5, "needs more epochs") and the exact
# IELBO at delta 0.01 (does its collapse heal?). The seed study's settings at 100 epochs, seed 0.
#
#   bash scripts/long_study.sh RUNS_DIR [JOBS]
#
# Resumable like the seed study (it is the seed study, narrowed): finished runs are skipped,
# unfinished ones resume. Summaries go to docs/results/long/<name>/seed<k>/.
set -euo pipefail
here=$(dirname "$0")
NAMES="iw_ielbo_k5 logit_normal ielbo_d0.1 elbo irelbo_a0.5_mlp2elu ielbo_d0.01" \
SEEDS=${SEEDS:-0} EPOCHS=${EPOCHS:-100} SUMMARIES=${SUMMARIES:-docs/results/long} \
  exec bash "$here/seed_study.sh" "$@"
