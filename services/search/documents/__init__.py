"""Live documents: the search service's documents API (routes.py), how a write is checked and encoded exactly as
the ingest would (schema.py, encode.py), MongoDB's change journal that makes an accepted write durable
(journal.py), and the applier that carries the journal into Milvus, one replica per corpus at a time (applier.py).
"""
