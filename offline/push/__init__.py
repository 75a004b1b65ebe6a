"""Bulk-load vectors into Milvus (behind an alias, switched only after verification) and documents into MongoDB."""
