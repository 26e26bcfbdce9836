#!/usr/bin/env bash
# Beauty recommendation on each ID method's IDs, one recommender for all (a small T5 from
# make_rec_backbone.py, ID histories, TIGER-style), then SASRec on the same sampled users. Run from the repo root:
#   [TAG=_name] bash benchmarks/run_bench_rec.sh STEPS [extra bench rec flags, e.g. --learning_rate 5e-3]
# Indexer folders come from run_bench_ids.sh / run_bench_lmindexer.sh (seed 0) and `index --method random`.
set -euo pipefail
STEPS=${1:-500}; shift || true
DATA=${DATA:-../shared/data}/amazon-beauty
IDS=${IDS:-runs/bench-ids}
export HF_HUB_OFFLINE=1
[ -f runs/rec-t5/config.json ] || python benchmarks/make_rec_backbone.py --data "$DATA" --output runs/rec-t5
[ -f "$IDS/beauty/random-seed0/semantic_id_map.safetensors" ] || lmindexer index --method random \
    --corpus "$DATA/items.jsonl" --text_fields title,brand --id_length 2 --codebook_size 256 --report_to none \
    --embedding_cache_dir "$IDS/beauty/.embeddings" --output_dir "$IDS/beauty/random-seed0"
INDEXERS=$IDS/beauty-lmindexer/lmindexer-seed0,$IDS/beauty/rqkmeans-seed0,$IDS/beauty/rqvae-seed0,$IDS/beauty/hkmeans-seed0,$IDS/beauty/random-seed0
lmindexer bench rec --data "$DATA" --indexers "${INDEXERS_OVERRIDE:-$INDEXERS}" --backbone runs/rec-t5 \
    --lmindexer_backbone shared --history_formats ids --seeds 0 --test_users 2000 --sample_seed 0 \
    --max_steps "$STEPS" --per_device_train_batch_size 256 --learning_rate 1e-3 --warmup_steps 0.05 \
    --train_sampling_strategy group_by_length --max_length 128 --eval_num_beams 20 --eval_ks 5,10 \
    --eval_strategy no --save_strategy no --report_to none --disable_tqdm true --logging_steps 50 \
    --output_dir "runs/bench-rec/beauty-$STEPS${TAG:-}" --output "benchmarks/rec_beauty_${STEPS}${TAG:-}.json" "$@"
