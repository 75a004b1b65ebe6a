#!/bin/sh
# A node of the standalone Spark cluster that `mmsearch ingest --engine spark` runs on (docker-compose profile
# "spark", deploy/k8s/spark/), from the offline image: its Java 17, pyspark and mmsearch are what executors need.
#   spark-node master                  Spark's own variables: SPARK_MASTER_HOST (default: this host's name),
#                                      SPARK_MASTER_PORT (7077), SPARK_MASTER_WEBUI_PORT (8080)
#   spark-node worker spark://h:7077   SPARK_WORKER_CORES, SPARK_WORKER_MEMORY, SPARK_WORKER_WEBUI_PORT (8081)
# The model repository, the work folder and the corpus must be mounted at the driver's paths.
set -eu
launcher="$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')/bin/spark-class"
case "${1:-}" in
  master)
    exec "$launcher" org.apache.spark.deploy.master.Master --host "${SPARK_MASTER_HOST:-$(hostname)}"
    ;;
  worker)
    exec "$launcher" org.apache.spark.deploy.worker.Worker "${2:?usage: spark-node worker spark://host:7077}"
    ;;
  *)
    echo "usage: spark-node master | spark-node worker spark://host:7077" >&2
    exit 2
    ;;
esac
