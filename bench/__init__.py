"""Benchmarks: this project's adapter and Scaler's own AWS Batch backend on the same Batch emulator.

Run ``python -m bench.run`` (or ``make bench``); see ``docs/benchmarks.md``.
"""
