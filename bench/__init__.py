"""Benchmarks: `python -m bench` runs the SFU benchmark."""
