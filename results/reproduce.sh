#!/usr/bin/env bash
# Re-runs every published table into results/NAME (one seed each), on this machine. Each table in
# README.md and docs/ is printed by `warpgrad report --format md results/NAME` from the
# results.json committed here (see results/README.md); a test checks that they agree.
#   bash results/reproduce.sh            all of them (about 50 minutes on 2 CPU cores, the probe runs about
#                                        50 more on a busy machine, the tuned kanji tables about 4 hours on
#                                        one core, and maze-quick about 5.5 hours)
#   bash results/reproduce.sh sine-quick one of them
# Then regenerate the tables: .venv/bin/python -m warpgrad.engine.docs_tables README.md docs/*.md
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
W=${WARPGRAD:-.venv/bin/warpgrad}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, even with another editable install

run() {  # NAME ARGS...: one table's run, from scratch into results/NAME
    local name=$1
    shift
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return; fi
    echo "== $name: warpgrad run $*" >&2
    rm -rf "results/$name"
    "$W" run "$@" --out "results/$name" --no-progress
}

add() {  # NAME ARGS...: more methods into results/NAME (after its run line)
    local name=$1
    shift
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return; fi
    echo "== $name (added): warpgrad run $*" >&2
    "$W" run "$@" --out "results/$name" --no-progress
}

ONLY="$*"
run kanji-multishot-quick kanji-multishot --method warpgrad,leap,baseline --profile quick
run kanji-fewshot-quick kanji-fewshot --method maml,warpgrad,baseline --profile quick
add kanji-fewshot-quick kanji-fewshot --method tnets,metasgd,anil,fomaml --profile quick  # run with OMP_NUM_THREADS=1
run sine-quick sine --method maml,fomaml,metasgd,reptile,leap,tnets,finetune,warpgrad,baseline,metafop --profile quick
# WarpGrad diverges on seed 4 (exit 1 naming the meta-step): its table counts the 4 seeds it finished
run sine-quick-seeds sine --method maml,tnets,warpgrad --profile quick --seeds 0-4 || echo "(warpgrad diverged, as expected)"
run sine-continual-quick sine-continual --method baseline,warpgrad --profile quick
# the runs of docs/results.md with settings chosen on validation tasks (--tune; OMP_NUM_THREADS=1)
run sine-quick-tuned sine --method maml,fomaml,metasgd,tnets,reptile,leap,finetune,warpgrad,baseline --profile quick \
    --tune meta_lr=3e-4,1e-3,3e-3,1e-2,3e-2
run sine-continual-quick-compared sine-continual --method baseline,ewc --profile quick --tune ewc.lam=0.01,0.1,1,10
add sine-continual-quick-compared sine-continual --method warpgrad --profile quick \
    --tune warpgrad.warp_lr=3e-4,1e-3,3e-3
# the kanji tables of docs/results.md, every method at its validation-chosen meta learning rate
# (OMP_NUM_THREADS=1; the four few-shot variants, then multi-shot with MAML/FOMAML at a 5-step horizon,
# then FOMAML at the full horizon)
FEWSHOT="warpgrad,maml,fomaml,metasgd,tnets,anil,baseline"
run kanji-fewshot-quick-tuned kanji-fewshot --method $FEWSHOT --profile quick --tune meta_lr=1e-3,3e-3,1e-2
run kanji-fewshot-5w1s-quick-tuned kanji-fewshot --method $FEWSHOT --profile quick --set ways=5 --set shots=1 \
    --tune meta_lr=1e-3,3e-3,1e-2
run kanji-fewshot-5w5s-quick-tuned kanji-fewshot --method $FEWSHOT --profile quick --set ways=5 --set shots=5 \
    --tune meta_lr=1e-3,3e-3,1e-2
run kanji-fewshot-20w5s-quick-tuned kanji-fewshot --method $FEWSHOT --profile quick --set ways=20 --set shots=5 \
    --tune meta_lr=1e-3,3e-3,1e-2
run kanji-multishot-quick-tuned kanji-multishot --method warpgrad,leap,reptile,fomaml,maml,finetune,baseline \
    --profile quick --set maml.horizon=5 --set fomaml.horizon=5 --tune meta_lr=3e-4,1e-3,3e-3,1e-2,3e-2
run kanji-multishot-fomaml-quick-tuned kanji-multishot --method fomaml --profile quick \
    --tune meta_lr=3e-4,1e-3,3e-3,1e-2,3e-2
run kanji-multishot-ablation-quick kanji-multishot-ablation --method all --profile quick  # OMP_NUM_THREADS=1
run kanji-sequential-quick kanji-sequential --method oml,anml,sgd,pretrain --profile quick
# linear probes of the representation after each fifth of the test classes, on the 15 stream images per class
run kanji-sequential-probes-quick kanji-sequential --method oml,anml,sgd,pretrain --profile quick --set probe_samples=15
# the same probes on sgd at a fixed meta-test lr at which its network trains (validation picks 1e-7, where it barely moves)
run kanji-sequential-sgd-probes-quick kanji-sequential --method sgd --profile quick --set probe_samples=15 --set lr_grid=0.001
# dhp-ewc diverges at this λ in 4 of 5 runs (exit 1 naming the run): left out of the published table
run digits-permuted-quick digits-permuted --method sgd,ewc,ewc-empirical,ewc-online,dhp --profile quick
run digits-permuted-probes-quick digits-permuted --method sgd,ewc,ewc-empirical,ewc-online,dhp --profile quick \
    --set probe_samples=100
run fmnist-permuted-quick fmnist-permuted --method sgd,ewc,ewc-empirical,ewc-online,dhp,dhp-ewc --profile quick
run fmnist-split-task-quick fmnist-split --method sgd,ewc,ewc-empirical,ewc-online,dhp,dhp-ewc --profile quick
run fmnist-split-class-quick fmnist-split --method sgd,ewc,ewc-empirical,ewc-online,dhp,dhp-ewc --profile quick \
    --set scenario=class --set ewc_lambda=10
run fmnist-permuted-probes-quick fmnist-permuted --method sgd,ewc,ewc-empirical,ewc-online,dhp,dhp-ewc --profile quick \
    --set probe_samples=100
run fmnist-split-task-probes-quick fmnist-split --method sgd,ewc,ewc-empirical,ewc-online,dhp,dhp-ewc --profile quick \
    --set probe_samples=100
run fmnist-split-class-probes-quick fmnist-split --method sgd,ewc,ewc-empirical,ewc-online,dhp,dhp-ewc --profile quick \
    --set scenario=class --set ewc_lambda=10 --set probe_samples=100
run navigation-quick navigation --method es-maml,es-maml-hc,maml-sim,fomaml-sim --profile quick
run four-corners-quick four-corners --method es-maml,es-maml-hc,maml-sim,fomaml-sim --profile quick
run fop-quick fop --method sgd,fop-sgd,momentum,fop-momentum,adam,fop-adam --profile quick
run fop-kanji-quick fop --method sgd,fop-sgd,momentum,fop-momentum,adam,fop-adam --profile quick --set data=kanji
run learned-optimizer-quick learned-optimizer --method learned,adam,sgd --profile quick
run learned-rules-quick learned-rules --method sgd,adam,blur,vsml,local-rules --profile quick
# results/sine-quick-analysis (needs the checkpoints, so a run of its own):
#   warpgrad run sine --profile quick --method maml,anil,warpgrad,reptile,leap,finetune --out runs/sine
#   warpgrad analyze runs/sine --out results/sine-quick-analysis
# results/kanji-fewshot-quick-analysis and results/kanji-multishot-quick-analysis (with snapshots of the
# learners every 25 / 20 meta-steps; one thread, OMP_NUM_THREADS=1, as they were run):
#   warpgrad run kanji-fewshot --profile quick --method maml,anil,warpgrad,leap,reptile,finetune \
#       --set snapshot_every=25 --out runs/kanji-fewshot
#   warpgrad analyze runs/kanji-fewshot --out results/kanji-fewshot-quick-analysis
#   warpgrad run kanji-multishot --profile quick --method warpgrad,leap,reptile,finetune \
#       --set snapshot_every=20 --out runs/kanji-multishot
#   warpgrad analyze runs/kanji-multishot --out results/kanji-multishot-quick-analysis
# FOP's hyper_lr grid on validation images (results/fop-tuning): bash results/tune_fop.sh
# about 5.5 hours on one core (3 seeds × 4 methods; seeds can run side by side: run maze-quick with
# --seeds replaced by one --seed each in separate processes, into results/maze-quick/seed-S)
run maze-quick maze --method warp-rnn,rnn,hebbian,backpropamine --profile quick --seeds 0-2
