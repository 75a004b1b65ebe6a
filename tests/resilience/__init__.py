"""Resilience suite (marker `resilience`, `scripts/test resilience`): load, faults, Consul, re-index, hostile input,
interrupted offline jobs. Figures go to bench/results/resilience.json (tests/resilience/report.py)."""
