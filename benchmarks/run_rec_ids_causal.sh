#!/usr/bin/env bash
# The paper's ID comparison on the CPU recommender: the same causal ID-stream model (`--preset cpu`), the same budget
# (8 epochs, no per-epoch validation) and the same start (the backbone's own initialisation, seeded) on LMIndexer,
# RQ-KMeans, rq-VAE, hierarchical k-means and random IDs of one layout (2 x 256 + dedup), evaluated on the 2,000
# sampled Beauty test users of `bench rec`. One recommender seed per call, one thread, so two seeds run side by side:
#   bash benchmarks/run_rec_ids_causal.sh 0 & bash benchmarks/run_rec_ids_causal.sh 1
# ID folders: `lmindexer bench ids ... --methods rqkmeans,rqvae,hkmeans,random --output_dir runs/bench-ids/beauty`,
# run_bench_lmindexer.sh, and run_rec_causal.sh (the 3 x 256 RQ-KMeans folder).
set -euo pipefail
SEED=${1:-0}; shift || true
DATA=${DATA:-../shared/data}/amazon-beauty
IDS=${IDS:-runs/bench-ids}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# The last folder is RQ-KMeans with a third learned position (3 x 256 + dedup, the headline's IDs), at the same budget.
INDEXERS=$IDS/beauty-lmindexer/lmindexer-seed0,$IDS/beauty/rqkmeans-seed0,$IDS/beauty/rqvae-seed0,$IDS/beauty/hkmeans-seed0,$IDS/beauty/random-seed0,runs/ids/beauty/rqkmeans3-seed0
lmindexer bench rec --preset cpu --data "$DATA" --indexers "${INDEXERS_OVERRIDE:-$INDEXERS}" --seeds "$SEED" \
    --test_users 2000 --sample_seed 0 --num_train_epochs 8 --eval_strategy no --save_strategy no \
    --load_best_model_at_end false --report_to none --disable_tqdm true \
    --output_dir "runs/bench-rec-causal/beauty-seed$SEED" --output "benchmarks/rec/ids_causal_beauty_seed$SEED.json" "$@"
