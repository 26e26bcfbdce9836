#!/usr/bin/env bash
# The ID-method comparison of benchmarks/README.md: every two-stage method, 3 seeds, on Beauty and Scientific
# (same MiniLM embeddings per dataset, cached under runs/bench-ids/<dataset>/.embeddings). Run from the repo root.
set -euo pipefail
DATA=${DATA:-../shared/data}
export HF_HUB_OFFLINE=1
COMMON=(--methods rqkmeans,rqvae,hkmeans --id_length 2 --codebook_size 256 --settings_per_method '{"rqvae": {"epochs": 20}}'
        --disable_tqdm true --report_to none)
lmindexer bench ids --data "$DATA/amazon-beauty" --text_fields title,brand --seeds 0,1,2 "${COMMON[@]}" \
    --output_dir runs/bench-ids/beauty --output benchmarks/ids_beauty.json
lmindexer bench ids --data "$DATA/amazon-scientific" --text_fields title,brand,description --seeds 0,1,2 "${COMMON[@]}" \
    --output_dir runs/bench-ids/scientific --output benchmarks/ids_scientific.json
# The layout of benchmarks/beauty_indexer.json (2 x 128), where LMIndexer as it stands was measured.
lmindexer bench ids --data "$DATA/amazon-beauty" --text_fields title,brand --seeds 0 --methods rqkmeans,rqvae,hkmeans \
    --id_length 2 --codebook_size 128 --settings_per_method '{"rqvae": {"epochs": 20}}' --disable_tqdm true --report_to none \
    --output_dir runs/bench-ids/beauty --output benchmarks/ids_beauty_128.json
