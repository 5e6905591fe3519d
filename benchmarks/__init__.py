"""Benchmarks: reproducible commands that print one JSON object each."""
