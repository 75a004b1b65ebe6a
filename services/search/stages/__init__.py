"""Pipeline stages, found by name through registries: a new matcher or ranker is one class and one YAML line."""
