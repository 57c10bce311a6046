"""Benchmarks: each script compares two ways of doing the same work in one run.

Run them as modules, e.g. `python -m tests.benchmarks.commands --postgres`; each prints
progress to stderr and one JSON object of figures as the last line of stdout. They are not
collected by pytest and assert nothing about timings.
"""
