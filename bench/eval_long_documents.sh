#!/usr/bin/env bash
# The long-documents evaluation (README, "Long documents"): the external judged collections CISI and MED ingested
# three ways (whole documents, passages of 254 and of 128 word pieces), then `mmsearch eval` through the running
# search service over every match experiment of bench/eval/long-documents.yaml.
#
#   MMSEARCH_SEARCH__MAX_QUERY_CHARS=2000 scripts/local-up --no-clip --ab-config bench/eval/long-documents.yaml
#                                              # in one terminal (some CISI queries are whole abstracts)
#   bench/eval_long_documents.sh [IR_DIR]        # in another (IR_DIR: default ../shared/data/ir)
#
# Reports: bench/results/long-documents/<collection>.{json,html}. Ingests are skipped when the stores already hold
# the same corpus (ingest is idempotent), so a second run only evaluates.
set -euo pipefail
cd "$(dirname "$0")/.."
IR=${1:-../shared/data/ir}
OUT=bench/results/long-documents
MILVUS=${MMSEARCH_MILVUS__URI:-http://127.0.0.1:19530}
MONGO=${MMSEARCH_MONGO__URI:-mongodb://127.0.0.1:27017}
mkdir -p "$OUT"
for c in cisi med; do
  for variant in "whole 0" "c254 254" "c128 128"; do
    set -- $variant
    .venv/bin/mmsearch ingest text --corpus "${c}_$1" --model minilm --input "$IR/$c/corpus.jsonl" \
      --chunk-tokens "$2" --milvus-uri "$MILVUS" --mongo-uri "$MONGO"
  done
done
for c in cisi med; do
  .venv/bin/mmsearch eval --scene "$c" --qrels "$IR/$c/qrels.tsv" --topics "$IR/$c/queries.jsonl" \
    --k 1,5,10,100 --out "$OUT/$c.json" --html "$OUT/$c.html" --mongo-uri "$MONGO"
done
