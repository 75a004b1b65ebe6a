"""Encode a normalised corpus into L2-normalised vector shards with a model of the repository (resumable)."""
