#!/usr/bin/env bash
# The CPU recommender on Amazon Beauty (or Scientific): `lmindexer finetune --preset cpu`, evaluated on every test
# user; one thread, as on a laptop with other work running. IDs: RQ-KMeans 3 x 256 + dedup (made here if missing), or
# any indexer folder given as IDS=... (with TAG=_name for the output). Run from the repo root:
#   bash benchmarks/run_rec_causal.sh beauty|scientific [extra finetune flags]
#   IDS=runs/bench-ids/beauty-lmindexer/lmindexer-seed0 TAG=_lmindexer bash benchmarks/run_rec_causal.sh beauty
set -euo pipefail
DATASET=${1:-beauty}; shift || true
DATA=${DATA:-../shared/data}
case $DATASET in
  beauty) FOLDER=amazon-beauty; FIELDS=title,brand ;;
  scientific) FOLDER=amazon-scientific; FIELDS=title,brand,description ;;
esac
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
IDS=${IDS:-runs/ids/$DATASET/rqkmeans3-seed0}
[ -f "$IDS/semantic_id_map.safetensors" ] || lmindexer index --method rqkmeans --corpus "$DATA/$FOLDER/items.jsonl" \
    --text_fields "$FIELDS" --id_length 3 --codebook_size 256 --seed 0 --report_to none --disable_tqdm true \
    --embedding_cache_dir "runs/bench-ids/$DATASET/.embeddings" --output_dir "$IDS"
OUT=runs/rec-causal/$DATASET${TAG:-}
start=$(date +%s)
lmindexer finetune --preset cpu --indexer "$IDS" --data "$DATA/$FOLDER" --output_dir "$OUT" \
    --report_to none --disable_tqdm true "$@"
python benchmarks/rec_result.py --run "$OUT" --wall_s $(( $(date +%s) - start )) --data "$DATA/$FOLDER" \
    --command "IDS=$IDS TAG=${TAG:-} bash benchmarks/run_rec_causal.sh $DATASET $*" --output "benchmarks/rec/causal_${DATASET}${TAG:-}.json"
