"""The offline jobs on Apache Spark: the heavy per-row work (encoding, document writes, Milvus fills) on executors."""
