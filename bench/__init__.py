"""Benchmarks: each writes bench/results/<name>.json with machine info; never run by the tests."""
