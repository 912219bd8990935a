"""Runtime values and operations shared by the compiled evaluator and the reference
interpreter (docs/language.md#expressions, docs/language.md#evaluation-errors-fail-closed).

Both evaluators call these functions, so they can only differ in *structure* (the
compiled one resolves paths, folds constants and indexes rules at compile time), never
in what an operator means. Every failure raises :class:`EvalError`, which a rule turns
into "not holding" (permit) or "holding" (forbid, require approval).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from ..language.globs import Glob


class EvalError(Exception):
    """An evaluation error inside a condition (missing attribute, type mismatch …).

    ``str(e)`` is the message decisions carry (``errors[].message``, pinned by
    tests/conformance). ``detail``, when the reference interpreter knows it, names the
    expression that failed and the values it had (``risk.score <= context.limit:
    risk.score is 0.5, context.limit is "high"``): :func:`~policylang.evaluation.interpreter.explain`
    shows it. It is filled in on the failure path only (:func:`operand_detail`)."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class Entity:
    """A principal, a delegation entry or a resource at run time.

    ``category`` is ``"principal"`` (principals and delegation entries, whose kind is
    ``kind``) or ``"resource"`` (whose kind is its ``type``). Built-in attributes are
    ``id`` and ``kind``/``type``; any other attribute reads ``attrs``.
    """

    __slots__ = ("category", "kind", "id", "attrs")

    def __init__(self, category: str, kind: str, id: str | None, attrs: dict):
        self.category = category
        self.kind = kind
        self.id = id
        self.attrs = attrs

    def get(self, name: str) -> Any:
        """The attribute's value, or ``None`` when absent (null counts as absent)."""
        if name == "id":
            return self.id
        if name == ("kind" if self.category == "principal" else "type"):
            return self.kind
        return self.attrs.get(name)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Entity) and self.category == other.category
                and self.kind == other.kind and self.id == other.id)

    def __hash__(self) -> int:
        return hash((self.category, self.kind, self.id))

    def __repr__(self) -> str:
        return f"{self.kind}({self.id!r})"


class Action:
    __slots__ = ("name", "attrs")

    def __init__(self, name: str, attrs: dict):
        self.name = name
        self.attrs = attrs

    def get(self, name: str) -> Any:
        if name == "name":
            return self.name
        return self.attrs.get(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Action) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"action({self.name!r})"


class Delegation:
    """``delegation.chain`` / ``.depth`` / ``.root``."""

    __slots__ = ("chain", "root")

    def __init__(self, chain: list[Entity], principal: Entity):
        self.chain = chain
        self.root = chain[0] if chain else principal

    def get(self, name: str) -> Any:
        if name == "chain":
            return self.chain
        if name == "depth":
            return len(self.chain)
        if name == "root":
            return self.root
        return None

    def __repr__(self) -> str:
        return f"delegation(depth={len(self.chain)})"


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, Entity):
        return "entity"
    if isinstance(v, Action):
        return "action"
    if isinstance(v, Delegation):
        return "delegation"
    return type(v).__name__


def show(v: Any, limit: int = 60) -> str:
    """A short, readable rendering of a value for explanations and messages."""
    if isinstance(v, str):
        import json
        text = json.dumps(v, ensure_ascii=False)
    elif isinstance(v, bool):
        text = "true" if v else "false"
    elif v is None:
        text = "null"
    else:
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: bounds of :func:`operand_detail` (an expression's text, one value's rendering)
DETAIL_EXPR_LIMIT = 80
DETAIL_VALUE_LIMIT = 40


def operand_detail(expr: str, operands: list[tuple[str | None, Any]]) -> str:
    """``"risk.score <= context.limit: risk.score is 0.5, context.limit is \"high\""``:
    the failed expression's text, then each operand's value and type (an operand written
    as a literal, ``text`` None, shows its value only). Bounded: the expression to
    :data:`DETAIL_EXPR_LIMIT` characters, each value to :data:`DETAIL_VALUE_LIMIT`."""
    parts = []
    for text, value in operands:
        shown = f"{show(value, DETAIL_VALUE_LIMIT)} ({type_name(value)})"
        if text is None:
            parts.append(shown)
        else:
            name = text if len(text) <= DETAIL_EXPR_LIMIT // 2 else text[: DETAIL_EXPR_LIMIT // 2 - 1] + "…"
            parts.append(f"{name} is {shown}")
    head = expr if len(expr) <= DETAIL_EXPR_LIMIT else expr[: DETAIL_EXPR_LIMIT - 1] + "…"
    return f"{head}: {', '.join(parts)}"


def error_message(e: EvalError) -> str:
    """The text of an evaluation error in a decision's ``errors``: what went wrong, then
    (when known) which expression failed with which values, e.g. ``'<=' needs two numbers
    or two strings, got number and string (at risk.score <= context.limit: risk.score is
    0.5 (number), context.limit is "high" (string))``. Both evaluators use this one."""
    return f"{e} (at {e.detail})" if e.detail else str(e)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------ attribute access

def get_attr(obj: Any, name: str, where: str = "") -> Any:
    """``obj.name``: raises when the attribute is missing or null, or obj has none."""
    if isinstance(obj, (Entity, Action, Delegation)):
        v = obj.get(name)
    elif isinstance(obj, dict):
        v = obj.get(name)
    else:
        raise EvalError(f"cannot read .{name} of a {type_name(obj)}")
    if v is None:
        raise EvalError(f"{where or 'value'} has no attribute '{name}'")
    return v


def has_attr(obj: Any, name: str) -> bool:
    if isinstance(obj, (Entity, Action, Delegation)):
        return obj.get(name) is not None
    if isinstance(obj, dict):
        return obj.get(name) is not None
    return False


def index(obj: Any, key: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        if not (isinstance(key, int) and not isinstance(key, bool)):
            raise EvalError(f"list index must be an integer, not a {type_name(key)}")
        if not 0 <= key < len(obj):
            raise EvalError(f"list index {key} out of range (length {len(obj)})")
        v = obj[key]
    elif isinstance(obj, dict):
        if not isinstance(key, str):
            raise EvalError(f"object key must be a string, not a {type_name(key)}")
        v = obj.get(key)
        if v is None:
            raise EvalError(f"object has no key {show(key)}")
    elif isinstance(obj, (Entity, Action, Delegation)) and isinstance(key, str):
        v = obj.get(key)
        if v is None:
            raise EvalError(f"{type_name(obj)} has no attribute {show(key)}")
    else:
        raise EvalError(f"cannot index a {type_name(obj)}")
    if v is None:
        raise EvalError("indexed value is null")
    return v


# ------------------------------------------------------------------ operators

def equals(a: Any, b: Any) -> bool:
    """``==``: never raises; different types are unequal; ints and decimals compare as numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equals(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return a == b


def compare(op: str, a: Any, b: Any) -> bool:
    if is_number(a) and is_number(b) or isinstance(a, str) and isinstance(b, str):
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        return a >= b
    raise EvalError(f"'{op}' needs two numbers or two strings, got {type_name(a)} and {type_name(b)}")


def arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        if is_number(a) and is_number(b):
            return a + b
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        raise EvalError(f"'+' needs two numbers or two strings, got {type_name(a)} and {type_name(b)}")
    if not (is_number(a) and is_number(b)):
        raise EvalError(f"'{op}' needs two numbers, got {type_name(a)} and {type_name(b)}")
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise EvalError("division by zero")
    return a / b


def negate(a: Any) -> Any:
    if not is_number(a):
        raise EvalError(f"unary '-' needs a number, got {type_name(a)}")
    return -a


def contains(item: Any, coll: Any) -> bool:
    """``item in coll``: list membership, or substring for two strings."""
    if isinstance(coll, (list, tuple)):
        for x in coll:
            if equals(item, x):
                return True
        return False
    if isinstance(coll, str):
        if isinstance(item, str):
            return item in coll
        raise EvalError(f"'in' a string needs a string on the left, got {type_name(item)}")
    raise EvalError(f"'in' needs a list or a string on the right, got {type_name(coll)}")


def boolean(v: Any, what: str = "operand") -> bool:
    if v is True or v is False:
        return v
    raise EvalError(f"{what} must be a boolean, got {type_name(v)}")


def iterable(v: Any) -> list:
    if isinstance(v, (list, tuple)):
        return v
    raise EvalError(f"a quantifier needs a list, got {type_name(v)}")


# ------------------------------------------------------------------ functions

def _len(v: Any) -> int:
    if isinstance(v, (str, list, tuple)):
        return len(v)
    raise EvalError(f"len() needs a list or a string, got {type_name(v)}")


def _str_arg(fn: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    raise EvalError(f"{fn}() needs a string, got {type_name(v)}")


def _in_cidr(ip: Any, net: Any) -> bool:
    network = net if isinstance(net, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else parse_cidr(net)
    if not isinstance(ip, str):
        raise EvalError(f"in_cidr() needs an IP address string, got {type_name(ip)}")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise EvalError(f"{show(ip)} is not an IP address") from None
    if addr.version != network.version:
        # the same host written in the other version: an IPv4-mapped IPv6 address
        # (::ffff:169.254.169.254) is its IPv4 address, and an IPv4 address is in an
        # IPv6 network when its mapped form is
        if addr.version == 6:
            addr = addr.ipv4_mapped
            if addr is None:
                return False
        else:
            addr = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed)
    return addr in network


@lru_cache(maxsize=1024)
def _cidr(text: str):
    return ipaddress.ip_network(text, strict=False)


def parse_cidr(text: Any):
    """The network for a CIDR string; raises :class:`EvalError` when it does not parse."""
    if not isinstance(text, str):
        raise EvalError(f"in_cidr() needs a CIDR string, got {type_name(text)}")
    try:
        return _cidr(text)
    except ValueError:
        raise EvalError(f"{show(text)} is not a CIDR network") from None


def cidr_is_valid(text: str) -> bool:
    try:
        _cidr(text)
        return True
    except ValueError:
        return False


#: name -> (implementation, number of arguments, static result type)
FUNCTIONS: dict[str, tuple[Any, int, str]] = {
    "len": (_len, 1, "number"),
    "lower": (lambda s: _str_arg("lower", s).lower(), 1, "string"),
    "upper": (lambda s: _str_arg("upper", s).upper(), 1, "string"),
    "starts_with": (lambda s, p: _str_arg("starts_with", s).startswith(_str_arg("starts_with", p)), 2, "bool"),
    "ends_with": (lambda s, p: _str_arg("ends_with", s).endswith(_str_arg("ends_with", p)), 2, "bool"),
    "in_cidr": (_in_cidr, 2, "bool"),
}


# ------------------------------------------------------------------ globs (policylang/language/globs.py)

@lru_cache(maxsize=4096)
def glob(pattern: str) -> Glob:
    return Glob(pattern)


def matches(value: Any, pattern: Any) -> bool:
    if not isinstance(value, str):
        raise EvalError(f"'matches' needs a string, got {type_name(value)}")
    g = pattern if isinstance(pattern, Glob) else glob(pattern)
    return g.match(value)
