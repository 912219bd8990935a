"""Diff and query over the encoding (docs/analysis.md). Every example request is replayed
through the engine before it is reported: an example whose replay disagrees is never
shown as a finding (it is counted in ``unconfirmed``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import z3

from .encode import (
    CODES,
    DECISIONS,
    LIST_BOUND,
    Encoder,
    Incomplete,
    applicable,
    decode,
    encode_decision,
    new_encoder,
    solve,
    triple_decision,
    triples,
)

#: what a decision change is called (docs/analysis.md#diff)
CHANGE_NAMES = {
    ("deny", "allow"): "new allow",
    ("require_approval", "allow"): "new allow without approval",
    ("allow", "deny"): "lost allow",
    ("allow", "require_approval"): "allow -> require_approval",
    ("deny", "require_approval"): "deny -> require_approval",
    ("require_approval", "deny"): "require_approval -> deny",
}


def _name(t):
    return "*other*" if t is None else t


@dataclass
class Finding:
    change: str
    old: str
    new: str
    kind: str
    action: str
    type: str
    request: dict
    old_rules: list
    new_rules: list

    @property
    def new_allow(self) -> bool:
        return self.new == "allow"

    def to_dict(self) -> dict:
        return {"change": self.change, "old": self.old, "new": self.new, "kind": self.kind,
                "action": self.action, "type": self.type, "request": self.request,
                "old_rules": self.old_rules, "new_rules": self.new_rules}


@dataclass
class DiffResult:
    findings: list = field(default_factory=list)
    incomplete: list = field(default_factory=list)  # {"kind", "action", "type", "reason"}
    unconfirmed: list = field(default_factory=list)
    checked: int = 0
    skipped_identical: int = 0
    seconds: float = 0.0
    list_bound: int = LIST_BOUND
    #: what the proofs of "no other change" assume beyond the list bound
    assumptions: set = field(default_factory=set)

    def groups(self) -> dict:
        """change -> (old rules, new rules) -> findings."""
        out: dict = {}
        for f in self.findings:
            key = (tuple(f.old_rules), tuple(f.new_rules))
            out.setdefault(f.change, {}).setdefault(key, []).append(f)
        return out

    def to_dict(self) -> dict:
        return {
            "changes": [
                {"change": ch, "groups": [{"old_rules": list(k[0]), "new_rules": list(k[1]),
                                           "examples": [f.to_dict() for f in fs]}
                                          for k, fs in groups.items()]}
                for ch, groups in self.groups().items()],
            "incomplete": self.incomplete,
            "unconfirmed": self.unconfirmed,
            "checked": self.checked,
            "skipped_identical": self.skipped_identical,
            "list_bound": self.list_bound,
            "assumptions": sorted(self.assumptions),
            "seconds": round(self.seconds, 3),
        }


def _engine(ps):
    from ..evaluation.engine import Engine
    return Engine(ps)


def _replay(engine, req) -> tuple[str, list] | None:
    try:
        d = engine.decide(req)
    except Exception:  # noqa: BLE001 - an example the engine rejects is not a finding
        return None
    return d.decision, list(d.rules)


def _rule_key(ps, rules):
    return tuple(r.rule for r in rules), ps.options


def diff(old, new, list_bound: int = LIST_BOUND, timeout_ms: int = 20_000,
         skip_identical: bool = True) -> DiffResult:
    """Requests whose decision under ``old`` and ``new`` differ, one example per
    (kind, action, type) and change (docs/analysis.md#diff). ``skip_identical``: a triple
    whose applicable rules have equal syntax trees in both sets (spans ignored), with equal
    constants, options and entity data, decides alike without asking the solver."""
    t0 = time.perf_counter()
    out = DiffResult(list_bound=list_bound)
    e_old, e_new = _engine(old), _engine(new)
    all_triples, names = triples(old, new)
    by_triple_old = _index(old, all_triples)
    by_triple_new = _index(new, all_triples)
    same_consts = dict(old.constants) == dict(new.constants)
    consts_new = old.constants if same_consts else new.constants
    # one symbolic request for every triple and both sets: each rule's terms are built
    # once (an unchanged rule once for both sets), each triple pins the three names
    enc = Encoder(None, None, None, list_bound=list_bound, symbolic=True)
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    added = 0
    for triple in all_triples:
        ro, rn = by_triple_old[triple], by_triple_new[triple]
        if skip_identical and same_consts and old.options == new.options and [r.rule for r in ro] == [r.rule for r in rn] \
                and old.entities == new.entities:
            out.skipped_identical += 1
            continue
        out.checked += 1
        kind, action, rtype = (_name(x) for x in triple)
        try:
            d_old, _, g_old, a_old = triple_decision(enc, old, ro, triple, names)
            d_new, _, g_new, a_new = triple_decision(enc, new, rn, triple, names, consts_new)
        except Incomplete as e:
            out.incomplete.append({"kind": kind, "action": action, "type": rtype, "reason": str(e)})
            continue
        out.assumptions |= a_old | a_new
        solver.add(*enc.facts[added:])  # facts hold of every request: kept for every triple
        added = len(enc.facts)
        guard_ids = sorted(g_old | g_new)
        guards = [enc.approx_guards[i] for i in guard_ids]
        solver.push()
        solver.add(*enc.triple_facts(triple, names))
        # one check per change found, plus one that proves there is no other: each model
        # names its (old, new) pair, which is then excluded
        seen: list = []
        while True:
            extra = [d_old != d_new] + [z3.Not(z3.And(d_old == o, d_new == n)) for o, n in seen]
            status, model = solve(solver, enc, *extra, guards=guards)
            if model is None:
                if status == "unknown":
                    out.incomplete.append({"kind": kind, "action": action, "type": rtype,
                                           "reason": f"the solver gave up ({solver.reason_unknown()})"})
                break
            o, n = model.eval(d_old, True).as_long(), model.eval(d_new, True).as_long()
            seen.append((o, n))
            so, sn = DECISIONS[o], DECISIONS[n]
            req = decode(model, enc)
            a, b = _replay(e_old, req), _replay(e_new, req)
            if a is not None and b is not None and a[0] == so and b[0] == sn:
                out.findings.append(Finding(CHANGE_NAMES[(so, sn)], so, sn, kind, action, rtype, req, a[1], b[1]))
            elif status == "approx":
                out.incomplete.append({"kind": kind, "action": action, "type": rtype,
                                       "reason": f"{so} -> {sn} only with {enc.approx[guard_ids[0]]} "
                                                 f"(left free by the encoding)"})
            else:
                out.unconfirmed.append({"kind": kind, "action": action, "type": rtype,
                                        "claimed": [so, sn], "request": req,
                                        "replayed": [a and a[0], b and b[0]]})
        solver.pop()
    out.seconds = time.perf_counter() - t0
    return out


def _index(ps, all_triples) -> dict:
    """(kind, action, type) -> the rules whose target can match it, without a scan per triple."""
    by_action: dict = {}
    for info in ps.rules:
        t = info.rule.target
        for a in (t.actions if t.actions is not None else ("*",)):
            by_action.setdefault(a, []).append(info)
    out = {}
    for triple in all_triples:
        kind, action, rtype = triple
        cands = by_action.get(action, []) if action is not None else []
        cands = sorted(cands + by_action.get("*", []), key=lambda i: i.index)
        out[triple] = applicable(_Rules(cands), kind, action, rtype)
    return out


class _Rules:
    def __init__(self, rules):
        self.rules = rules


@dataclass
class QueryResult:
    status: str  # "found", "none", "incomplete"
    request: dict | None = None
    decision: dict | None = None
    reasons: list = field(default_factory=list)
    checked: list = field(default_factory=list)
    list_bound: int = LIST_BOUND
    assumptions: set = field(default_factory=set)

    def to_dict(self) -> dict:
        return {"status": self.status, "request": self.request, "decision": self.decision,
                "incomplete": self.reasons, "checked": self.checked, "list_bound": self.list_bound,
                "assumptions": sorted(self.assumptions)}


def parse_where(text: str):
    """An expression of the language, read as the condition of a rule."""
    from ..language.loader import loads
    ps = loads(f"permit * to * on *\n  when {text}\n", name="--where")
    return ps.rules[0].rule.conditions[0].expr


def query(ps, decision: str, kind: str | None = None, action: str | None = None, rtype: str | None = None,
          where: str | None = None, approvals: str = "none", list_bound: int = LIST_BOUND,
          timeout_ms: int = 20_000, grant_ttl_over: int | None = None) -> QueryResult:
    """A request of (kind, action, type) (``None``: any) whose decision is ``decision`` and for
    which ``where`` holds; "none" is a proof (within the list bound), "incomplete" names why not.
    ``grant_ttl_over``: moreover some permit with a grant longer than that many seconds holds
    (with ``decision="allow"``: the allow hands out such a grant)."""
    code = CODES[decision]
    where_expr = parse_where(where) if where else None
    names, wanted = _query_triples(ps, kind, action, rtype)
    engine = _engine(ps)
    out = QueryResult("none", list_bound=list_bound)
    for triple in wanted:
        label = "/".join(_name(x) for x in triple)
        enc = new_encoder(triple, names, list_bound=list_bound)
        try:
            res = encode_decision(enc, ps, approvals=approvals)
            extra = _query_constraints(enc, ps, res, where_expr, grant_ttl_over)
        except Incomplete as e:
            out.reasons.append(f"{label}: {e}")
            continue
        solver = z3.Solver()
        solver.set("timeout", timeout_ms)
        solver.add(*enc.facts, *extra)
        out.assumptions |= enc.assumptions
        status, model = solve(solver, enc, res.decision == code)
        out.checked.append(label)
        if model is not None:
            if _found(out, engine, enc, res, model, status, label, decision, approvals, grant_ttl_over):
                return out
            continue
        if status == "unknown":
            out.reasons.append(f"{label}: the solver gave up ({solver.reason_unknown()})")
    if out.reasons:
        out.status = "incomplete"
    return out


def _query_triples(ps, kind, action, rtype):
    """The names the encoder distinguishes, and the (kind, action, type) triples to ask
    about (``None`` in a slot: a name no rule mentions)."""
    _all, names = triples(ps)
    names = tuple(tuple(sorted(set(ns) | ({x} if x else set()))) for ns, x in zip(names, (kind, action, rtype)))
    wanted = []
    for k in (names[0] + (None,) if kind is None else (kind,)):
        for a in (names[1] + (None,) if action is None else (action,)):
            for t in (names[2] + (None,) if rtype is None else (rtype,)):
                wanted.append((k, a, t))
    return names, wanted


def _query_constraints(enc, ps, res, where_expr, grant_ttl_over) -> list:
    """The question's own constraints: ``where`` holds (without raising), and a permit with
    a grant longer than ``grant_ttl_over`` holds."""
    extra = []
    if where_expr is not None:
        er, v = enc.ev(where_expr, {"vars": {}, "constants": ps.constants})
        extra.append(z3.And(z3.Not(er), v.tag == 1, v.b))
    if grant_ttl_over is not None:
        long = [res.held[i.id] for i in ps.rules if i.id in res.held and i.rule.effect == "permit"
                and i.rule.grant is not None and i.rule.grant.ttl > grant_ttl_over]
        extra.append(z3.Or(*long) if long else z3.BoolVal(False))
    return extra


def _found(out, engine, enc, res, model, status, label, decision, approvals, grant_ttl_over) -> bool:
    """Decode the model and replay it through the engine; True (and ``out`` filled) when
    it reproduces the asked decision, else the reason goes to ``out.reasons``."""
    req = decode(model, enc)
    got = _replay(engine, req) if approvals == "none" else None
    if grant_ttl_over is not None and got is not None and \
            not any(g["ttl"] > grant_ttl_over for g in engine.decide(req).to_dict()["grants"]):
        got = (f"{got[0]} without a grant over {grant_ttl_over}s", [])
    if approvals == "none" and (got is None or got[0] != decision):
        why = f"only with {enc.approx[0]} (left free by the encoding)" if status == "approx" else \
            f"the solver's example did not replay (engine says {got and got[0]})"
        out.reasons.append(f"{label}: {why}")
        return False
    out.status, out.request = "found", req
    if approvals == "free":
        out.decision = {"decision": decision,
                        "approved": [g for g, b in res.approved.items() if z3.is_true(model.eval(b, True))]}
    else:
        out.decision = engine.decide(req).to_dict()
    return True
