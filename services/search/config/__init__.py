"""The A/B config: its typed model, the checks against models and collections, where it comes from (file or
Consul), the manager that applies it live, and `mmsearch config`."""
