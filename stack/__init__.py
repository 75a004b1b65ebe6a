"""The whole stack on one machine with embedded defaults: `mmsearch local up` (and `scripts/local-up`).

Pieces, in the order `up` uses them: `plan` (ports, folders, URLs: one typed record every step reads),
`ports` (refuse taken ports), `bundled_models` (export MiniLM / CLIP unless present), `corpora` (demo data),
`procfile` (the honcho Procfile and environment), `supervisor` (honcho, with per-process logs),
`setup` (the Procfile's setup process: stores ready -> ingest unless loaded -> services ready -> URLs),
`probes` (readiness checks), `catalog` (what is already loaded in Milvus and MongoDB).
"""
