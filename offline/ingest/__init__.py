"""Preprocess, encode and push a corpus in one command (`mmsearch ingest qa|images`)."""
