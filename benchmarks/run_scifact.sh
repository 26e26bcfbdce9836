#!/usr/bin/env bash
# SciFact generative retrieval on IDs learned for SciFact itself: LMIndexer (CPU preset of run_bench_lmindexer.sh),
# RQ-KMeans on MiniLM embeddings and atomic IDs (a random bit + a unique dedup token), 2 x 64 + dedup, then
# `lmindexer bench retrieval` with BM25 and dense MiniLM in the same run. Run from the repo root:
#   bash benchmarks/run_scifact.sh [extra bench retrieval flags]
set -euo pipefail
DATA=${DATA:-../shared/data}/scifact
WORK=${WORK:-runs/scifact}
export HF_HUB_OFFLINE=1
BACKBONE=$(python -c "from lmindexer.trainers.data.embeddings import default_encoder; print(default_encoder())")
COMMON=(--corpus "$DATA/corpus.jsonl" --id_field _id --text_fields title,text --id_length 2 --codebook_size 64
        --report_to none --disable_tqdm true --save_strategy no)
[ -f "$WORK/lmindexer/semantic_id_map.safetensors" ] || lmindexer index "${COMMON[@]}" --backbone "$BACKBONE" \
    --max_length 64 --encoder_trainable_layers 0 --learning_rate 1e-4 --head_learning_rate 1e-3 \
    --reconstructor_warmup_learning_rate 1e-3 --encoder_warmup_learning_rate 1e-4 --codebook_learning_rate 1e-4 \
    --reconstructor_warmup_epochs 1 --encoder_warmup_epochs 1 --codebook_epochs 1 \
    --reconstructor_warmup_batch_size 64 --encoder_warmup_batch_size 64 --codebook_batch_size 64 \
    --logging_steps 20 --output_dir "$WORK/lmindexer"
[ -f "$WORK/rqkmeans/semantic_id_map.safetensors" ] || lmindexer index "${COMMON[@]}" --method rqkmeans \
    --embedding_cache_dir "$WORK/.embeddings" --output_dir "$WORK/rqkmeans"
[ -f "$WORK/atomic/semantic_id_map.safetensors" ] || lmindexer index --corpus "$DATA/corpus.jsonl" --id_field _id \
    --text_fields title,text --method random --id_length 1 --codebook_size 2 --report_to none \
    --embedding_cache_dir "$WORK/.embeddings" --output_dir "$WORK/atomic"
lmindexer bench retrieval --data "$DATA" --indexers "$WORK/lmindexer,$WORK/rqkmeans,$WORK/atomic" \
    --backbone "$BACKBONE" --max_length 64 --num_train_epochs 2 --per_device_train_batch_size 32 \
    --learning_rate 5e-4 --warmup_steps 0.05 --train_sampling_strategy group_by_length \
    --eval_num_beams 100 --eval_ks 10,100 --eval_strategy no --save_strategy no --report_to none --disable_tqdm true \
    --logging_steps 50 --output_dir "$WORK/retrievers" --output benchmarks/retrieval_scifact.json "$@"
