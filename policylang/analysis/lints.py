"""Lints proven by the solver (docs/analysis.md#proven-lints), for ``policylang check --prove``.

Over the encoding of docs/analysis.md (one symbolic request, pinned to each (kind, action,
type) in turn), three lints, each a proof that no request is a counterexample:

* **W201** a rule that can never determine a decision: no request satisfies its target
  and conditions, or (a permit or approval gate) every request it holds for is denied by
  a forbid — the exact version of the checker's W104;
* **W202** a permit subsumed by (or equivalent to) another permit with the same grant:
  every request it allows, the other allows too;
* **W203** a forbid that blocks everything a permit allows (the permit is dead).

Stored entity data does not stop a proof: after the merge an entity's attributes are ones
a request could carry itself. ``option attenuate_delegation`` does (one note for the set).

A rule whose terms are not exact — a construct the encoding does not express (lower(),
in_cidr(), ``/``, limits, …), a construct the list bound changes (``len`` of
a request list, an index into one, ``delegation.depth``), numeric arithmetic (proofs
assume exact rationals), or more tests over request lists than the bound — is never the
subject of a lint: it gets a note (**N201** "not proven: …") instead. As *another* rule in
a proof (the forbid of a W201, …) such a rule is a free boolean, which only ever makes a
proof harder, never wrong. A solver timeout is a note too, never a lint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import z3

from ..language.errors import Diagnostic
from .encode import LIST_BOUND, Encoder, triples

#: the codes (docs/diagnostics.md); the notes are severity "note"
W_NEVER, W_SUBSUMED, W_DEAD, N_NOT_PROVEN = "W201", "W202", "W203", "N201"


@dataclass
class _State:
    """What the triples showed about one rule so far."""

    inexact: str | None = None  # why a lint cannot be claimed
    unknown: bool = False  # the solver gave up on some check
    sat: bool = False  # its target and conditions hold for some request
    alive: bool = False  # it determines the decision of some request
    #: forbids that held wherever it held (W203), permits that allowed wherever it did (W202); None: not yet
    forbids: set | None = None
    permits: set | None = None
    triples: list = field(default_factory=list)


def _who(info) -> str:
    return f"'{info.id}' ({info.location})" if info.explicit_id else f"at {info.location}"


def _what(info) -> str:
    return {"permit": "permit", "forbid": "forbid"}.get(info.rule.effect, "require approval rule")


def _diag(code: str, severity: str, info, message: str) -> Diagnostic:
    return Diagnostic(code, severity, message, info.rule.head_span)


def proven_lints(policy_set, list_bound: int = LIST_BOUND, timeout_ms: int = 5_000) -> list[Diagnostic]:
    """W201, W202, W203 and N201 diagnostics of ``policy_set`` (docs/analysis.md#proven-lints),
    in rule order. Needs z3 (the ``analysis`` extra)."""
    rules = list(policy_set.rules)
    if not rules:
        return []
    if policy_set.options.attenuate_delegation:
        return [_diag(N_NOT_PROVEN, "note", rules[0],
                      "not proven: the set uses option attenuate_delegation, so no rule is checked by the "
                      "solver (docs/analysis.md#proven-lints)")]
    # Entity data needs no note: an entity's attributes after the merge (stored under the
    # request's, or the stored record alone when authoritative) are attributes some request
    # could carry itself, so a proof over every request's attributes covers them.
    from .solve import _index

    all_triples, names = triples(policy_set)
    index = _index(policy_set, all_triples)
    enc = Encoder(None, None, None, list_bound=list_bound, symbolic=True)
    enc.free_list_eq = True  # sound for proofs, and no equality depends on the list bound
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    state = {info.id: _State() for info in rules}
    by_id = {info.id: info for info in rules}
    added = 0
    for triple in all_triples:
        rs = index[triple]
        if not rs:
            continue
        terms = _terms(enc, policy_set, rs, triple, state, list_bound)
        solver.add(*enc.facts[added:])
        added = len(enc.facts)
        solver.push()
        solver.add(*enc.triple_facts(triple, names))
        _check_triple(solver, rs, terms, state)
        solver.pop()
    return _report(rules, state, by_id)


def _terms(enc, ps, rs, triple, state, list_bound) -> dict:
    """Each applicable rule's "holds" term for ``triple``: exact, or a free boolean (and
    the rule marked inexact) when it is not."""
    helds = {info.id: enc.held(info, ps.constants) for info in rs}
    why = {}
    for info in rs:
        h = helds[info.id]
        if h.term is None:
            why[info.id] = f"rule {info.id} uses {h.incomplete}"
        elif h.bounded:
            why[info.id] = (f"rule {info.id} uses {min(h.bounded)}, which the list bound "
                            f"({list_bound} items) changes")
        elif h.assumptions:
            why[info.id] = (f"rule {info.id} uses numeric arithmetic (+ - * on numbers, which the encoding "
                            f"takes as exact rationals, not the requests' floating point)")
    witnesses = sum(h.witnesses for i, h in helds.items() if i not in why)
    if witnesses > list_bound:
        for i, h in helds.items():
            if i not in why and h.witnesses:
                why[i] = (f"rule {i} is checked with {witnesses} tests over request lists, more than "
                          f"the list bound ({list_bound} items)")
    terms = {}
    for info in rs:
        if info.id in why:
            st = state[info.id]
            st.inexact = st.inexact or why[info.id]
            terms[info.id] = z3.Bool(f"lint-free#{info.index}")
        else:
            terms[info.id] = z3.And(enc.target(info.rule.target, triple), helds[info.id].term)
    return terms


def _check(solver, *assumptions):
    r = solver.check(*assumptions)
    return "sat" if r == z3.sat else "unsat" if r == z3.unsat else "unknown"


def _check_triple(solver, rs, terms, state) -> None:
    """Update every exact rule's state with what the solver finds for this triple."""
    forbids = [i for i in rs if i.rule.effect == "forbid"]
    no_forbid = z3.Not(z3.Or(*[terms[f.id] for f in forbids])) if forbids else z3.BoolVal(True)
    for info in rs:
        st = state[info.id]
        if st.inexact or st.unknown:
            continue
        if info.rule.effect == "forbid":
            _check_forbid(solver, terms[info.id], st)
        elif info.rule.effect == "permit" or not st.alive:
            _check_allowing(solver, info, rs, forbids, terms, state, no_forbid)


def _check_forbid(solver, held, st) -> None:
    """A forbid determines a decision wherever it holds."""
    if st.alive:
        return
    r = _check(solver, held)
    if r == "sat":
        st.sat = st.alive = True
    st.unknown = r == "unknown"


def _check_allowing(solver, info, rs, forbids, terms, state, no_forbid) -> None:
    """A permit or a gate: does it hold where no forbid does (alive)? Else does it hold at
    all, and which forbids cover it (W203)? And for a permit: which permits with the same
    grant hold wherever it does (W202)?"""
    st = state[info.id]
    held = terms[info.id]
    permit = info.rule.effect == "permit"
    r = _check(solver, held, no_forbid)
    if r == "sat":
        st.sat = st.alive = True
    else:
        if r == "unsat":
            r = _check(solver, held)
        if r == "unknown":
            st.unknown = True
            return
        if r == "unsat":
            return  # it never holds here: nothing to cover
        st.sat = True
    model = solver.model()
    if permit and not st.alive:  # W203: the forbids that hold wherever it holds here
        st.forbids = _narrow(solver, held, model, [f.id for f in forbids], terms, state, st, st.forbids)
    if permit:  # W202: the permits with the same grant that hold wherever it holds here
        same_grant = [q.id for q in rs if q.id != info.id and q.rule.effect == "permit"
                      and q.rule.grant == info.rule.grant]
        st.permits = _narrow(solver, held, model, same_grant, terms, state, st, st.permits)


def _narrow(solver, held, model, candidates, terms, state, st, current: set | None) -> set:
    """``current`` (None: not yet narrowed) kept to the exact ``candidates`` that hold in
    ``model`` and hold wherever ``held`` does in this triple."""
    here = {c for c in candidates if c in terms and not state[c].inexact and (current is None or c in current)
            and z3.is_true(model.eval(terms[c], True))}
    here = {c for c in here if _covers(solver, held, terms[c], st)}
    return here if current is None else current & here


def _covers(solver, held, other, st) -> bool:
    """No request of this triple satisfies ``held`` and not ``other``."""
    r = _check(solver, held, z3.Not(other))
    if r == "unknown":
        st.unknown = True
    return r == "unsat"


def _report(rules, state, by_id) -> list[Diagnostic]:
    out = []
    for info in rules:
        st = state[info.id]
        what = _what(info)
        if st.inexact:
            out.append(_diag(N_NOT_PROVEN, "note", info, f"not proven: {st.inexact}; the solver checks no lint "
                                                          f"of this {what} (docs/analysis.md#proven-lints)"))
        elif st.unknown:
            out.append(_diag(N_NOT_PROVEN, "note", info, f"not proven: the solver gave up on this {what} "
                                                          f"(timeout); no lint is claimed"))
        elif not st.sat:
            out.append(_diag(W_NEVER, "warning", info,
                             f"this {what} can never determine a decision (proven): no request satisfies its "
                             f"target and conditions; fix its conditions or remove it"))
        elif not st.alive:
            dead_by = sorted((by_id[f] for f in st.forbids or ()), key=lambda i: i.index)
            if info.rule.effect == "permit" and dead_by:
                f = dead_by[0]
                out.append(_diag(W_DEAD, "warning", info,
                                 f"this permit is dead (proven): the forbid {_who(f)} denies every request "
                                 f"this permit allows; narrow the forbid, or remove this permit"))
            else:
                out.append(_diag(W_NEVER, "warning", info,
                                 f"this {what} can never determine a decision (proven): every request it holds "
                                 f"for is denied by a forbid; narrow the forbids, or remove this rule"))
        elif info.rule.effect == "permit" and st.permits:
            subs = sorted((by_id[q] for q in st.permits), key=lambda i: i.index)
            strict = [q for q in subs if info.id not in (state[q.id].permits or ())]
            same = [q for q in subs if q not in strict]
            if strict:
                q = strict[0]
                out.append(_diag(W_SUBSUMED, "warning", info,
                                 f"this permit is subsumed by the permit {_who(q)} (proven): that permit allows "
                                 f"every request this one allows, with the same grant; remove this one"))
            elif same and same[0].index < info.index:
                q = same[0]
                out.append(_diag(W_SUBSUMED, "warning", info,
                                 f"this permit is equivalent to the permit {_who(q)} (proven): both allow "
                                 f"exactly the same requests, with the same grant; remove one"))
    return out
