#!/usr/bin/env bash
# LMIndexer on the layout of the ID-method table (2 x 256 + dedup), CPU preset: all-MiniLM-L6-v2 as a bert2bert
# backbone with its encoder frozen (states computed once), the decoder, cross-attention, codebooks and reconstructor
# trained. Usage: benchmarks/run_bench_lmindexer.sh beauty|scientific SEEDS [extra flags]. Run from the repo root.
set -euo pipefail
DATASET=$1; SEEDS=$2; shift 2
DATA=${DATA:-../shared/data}
export HF_HUB_OFFLINE=1
BACKBONE=$(python -c "from lmindexer.trainers.data.embeddings import default_encoder; print(default_encoder())")
case $DATASET in
  beauty) FOLDER=amazon-beauty; FIELDS=title,brand; LENGTH=48 ;;
  scientific) FOLDER=amazon-scientific; FIELDS=title,brand,description; LENGTH=128 ;;
esac
lmindexer bench ids --data "$DATA/$FOLDER" --text_fields "$FIELDS" --methods lmindexer --seeds "$SEEDS" \
    --id_length 2 --codebook_size 256 --backbone "$BACKBONE" --max_length "$LENGTH" \
    --encoder_trainable_layers 0 --learning_rate 1e-4 --head_learning_rate 1e-3 \
    --reconstructor_warmup_learning_rate 1e-3 --encoder_warmup_learning_rate 1e-4 --codebook_learning_rate 1e-4 \
    --reconstructor_warmup_epochs 1 --encoder_warmup_epochs 1 --codebook_epochs 1 \
    --reconstructor_warmup_batch_size 64 --encoder_warmup_batch_size 64 --codebook_batch_size 64 \
    --save_strategy no --logging_steps 50 --disable_tqdm true --report_to none \
    --output_dir "runs/bench-ids/$DATASET-lmindexer" --output "benchmarks/ids_${DATASET}_lmindexer.json" "$@"
