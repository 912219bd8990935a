"""Solver-backed analysis of policy sets (docs/analysis.md): ``diff`` of two sets and
``query`` of one, over the SMT encoding of :mod:`policylang.analysis.encode`.

Needs the ``analysis`` extra (z3-solver); nothing else in policylang imports this package.
"""
