"""pytest configuration for the benchmark suite.

CI runs ``pytest benchmarks/ --benchmark-disable``: each benchmark body then runs once,
as a smoke test, so keep every body fast. Timings are only meaningful without that flag,
and only as ratios within one run (the machines are shared and noisy): no test here
asserts on a time. Inputs come from ``benchmarks/_support.py`` and are built once per
session.
"""
