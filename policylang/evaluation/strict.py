"""Strict requests (docs/requests.md#strict): unknown keys are errors, with a did-you-mean.

A request is a JSON object with fixed keys, and so are its entities and its action; an
unknown key there is almost always a typo (``contxt``, ``principle``) or an attribute put
beside ``id`` instead of inside ``attrs`` (``principal.region``), which the engine would
otherwise ignore without a word. ``Engine(strict=True)`` refuses such a request with a
:class:`RequestError` naming the key; ``policylang eval`` and ``policylang test`` always
decide strictly. ``context``, ``risk``, ``intent`` and every ``attrs`` are free-form.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..language.errors import RequestError
from ..language.words import did_you_mean

#: the keys a request may have (docs/requests.md#fields)
REQUEST_KEYS = ("principal", "action", "resource", "context", "risk", "delegation", "intent",
                "approval", "idempotency_key")
_ENTITY_KEYS = {"principal": ("id", "kind", "attrs"), "resource": ("type", "id", "attrs"),
                "action": ("name", "attrs")}
_DELEGATOR_KEYS = ("id", "kind", "attrs")


def check_strict(raw: Any) -> None:
    """Raise :class:`RequestError` for the first unknown key of ``raw`` (in document
    order); anything else about the request is left to the normal validation."""
    if not isinstance(raw, Mapping):
        return
    for key in raw:
        if key not in REQUEST_KEYS:
            raise RequestError(str(key), f"unknown key{did_you_mean(str(key), REQUEST_KEYS)}; "
                                         f"a request has {', '.join(REQUEST_KEYS)}")
    for root, known in _ENTITY_KEYS.items():
        obj = raw.get(root)
        if isinstance(obj, Mapping):
            _check_object(obj, root, known)
    chain = raw.get("delegation")
    if isinstance(chain, list):
        for i, entry in enumerate(chain):
            if isinstance(entry, Mapping):
                _check_object(entry, f"delegation[{i}]", _DELEGATOR_KEYS)


def _check_object(obj: Mapping, where: str, known: tuple[str, ...]) -> None:
    for key in obj:
        if key in known:
            continue
        key = str(key)
        hint = did_you_mean(key, known)
        if not hint and "attrs" in known:
            hint = f" (an attribute goes inside attrs: {where}.attrs.{key})"
        raise RequestError(f"{where}.{key}", f"unknown key{hint}; {where} has {', '.join(known)}")
