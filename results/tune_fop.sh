#!/usr/bin/env bash
# FOP's hyper_lr for the fop experiment, chosen on validation images only: for each base optimiser,
# runs of 300 steps (2 runs each) at hyper_lr 0.001, 0.01 and 0.1, evaluated on a held-out sixth of
# the Fashion-MNIST training images (--set validation=true), never on the test set. Writes
# results/fop-tuning/HYPER_LR/results.json (and base/ for the plain optimisers); the chosen values are the fop profiles' defaults.
#   bash results/tune_fop.sh        (about 10 minutes on one CPU core)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
W=${WARPGRAD:-.venv/bin/warpgrad}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
for h in 0.001 0.01 0.1; do
    rm -rf "results/fop-tuning/$h"
    "$W" run fop --profile quick --method fop-sgd,fop-momentum,fop-adam --no-progress \
        --set validation=true --set meta_steps=300 --set runs=2 \
        --set fop-sgd.hyper_lr=$h --set fop-momentum.hyper_lr=$h --set fop-adam.hyper_lr=$h \
        --out "results/fop-tuning/$h"
done
rm -rf results/fop-tuning/base  # the base optimisers on the same validation runs, for reference
"$W" run fop --profile quick --method sgd,momentum,adam --no-progress \
    --set validation=true --set meta_steps=300 --set runs=2 --out results/fop-tuning/base
