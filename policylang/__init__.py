"""policylang: authorization policies for AI agents and other non-human identities.

The public API (README.md#python-api)::

    import policylang
    policies = policylang.load("examples/coding-agent/policies")
    engine = policylang.Engine(policies)
    decision = engine.decide(request)

Data flows one way, one module per phase: ``source`` → ``parser`` → ``ast`` →
``checker`` → ``compiler`` → ``engine`` (with ``requests`` validating input and
``decision`` shaping output); ``interpreter`` is the plain reference evaluator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .language.errors import Diagnostic, PolicyError, RequestError
from .language.loader import load, loads
from .language.policyset import PolicySet

if TYPE_CHECKING:  # pragma: no cover
    from .evaluation.decision import Decision
    from .evaluation.engine import Engine

__all__ = ["load", "loads", "Engine", "Decision", "PolicySet", "PolicyError", "RequestError", "Diagnostic"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The engine is imported on first use, so tools that only parse and check start fast.
    if name == "Engine":
        from .evaluation.engine import Engine
        return Engine
    if name == "Decision":
        from .evaluation.decision import Decision
        return Decision
    raise AttributeError(f"module 'policylang' has no attribute {name!r}")
