"""Evaluation: a checked policy set and a request in, a :class:`~policylang.evaluation.decision.Decision` out.

``request`` validates a request and merges entity data → ``compiler`` turns the set into
an indexed decision tree of generated Python → ``engine`` owns that tree and the bounded
cache; ``interpreter`` is the plain reference evaluator over the AST (the oracle the
compiled code is tested against); both share ``runtime`` (operators, values) and
``decision`` (the one place rule outcomes are combined and attenuated).
"""
