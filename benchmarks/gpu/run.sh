#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu/suite.py): CUDA tests and every GPU figure, each part under its own time limit.
#   bash benchmarks/gpu/run.sh --out "$OUT" [--rec_model runs/rec-causal/beauty]   # on a GPU machine, 7 minutes at most
#   bash benchmarks/gpu/run.sh --smoke                                              # on a CPU, toy sizes, < 1 minute
# Needs torch, transformers, tokenizers, safetensors and pytest, nothing else (no pip, no network): the package is
# imported from this checkout through a folder of links, put first on PYTHONPATH, that mirrors setup.cfg's mapping
# of lmindexer/ and three top-level folders onto one import name, so this checkout's code is what runs even where
# another copy is installed. PYTHON picks the interpreter (default python3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export GPU_SUITE_COMMAND="bash benchmarks/gpu/run.sh $*"

LINKS=$(mktemp -d "${TMPDIR:-/tmp}/lmindexer-path.XXXXXX")
trap 'rm -rf "$LINKS"' EXIT
mkdir "$LINKS/lmindexer"
ln -s "$ROOT/lmindexer/__init__.py" "$LINKS/lmindexer/__init__.py"
for folder in modeling_lmindexer trainers hub_cards; do ln -s "$ROOT/$folder" "$LINKS/lmindexer/$folder"; done
export PYTHONPATH="$LINKS${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" benchmarks/gpu/suite.py "$@"
