"""Adapters: one scenario, every engine.

Each adapter translates a :class:`~benchmarks.scenarios.Scenario` (its neutral
:class:`~benchmarks.scenarios.Rule` list plus entity data) into one engine's own policy
language at :meth:`Adapter.load` time, and decides a batch of docs/requests.md#request request dicts in
:meth:`Adapter.run`. ``run`` is the timed call: it starts from the plain request dicts,
does whatever translation that engine needs, calls the engine, and ends with the
engine's own decision objects (no post-processing). :meth:`Adapter.allowed` turns those
into booleans afterwards, outside the timing, for the agreement check.

Every peer is used at its best as far as we know it:

* **policylang**: ``Engine(policies, cache_size=0)``, one ``decide(dict)`` per request,
  returning a ``Decision`` (the cached engine and ``decide_many`` are separate rows).
* **cedar** (``cedarpy``): policies pre-parsed once (``PolicySet.from_str``), entity data
  pre-parsed once (``Entities``), the batch API ``is_authorized_batch``. Risk is a Cedar
  ``decimal`` (Cedar has no floats). A Cedar request cannot carry attributes, so the
  entity store is Cedar's natural source of them; the request's own attrs are equal.
* **casbin** (pycasbin): ``FastEnforcer`` with ``cache_key_order`` on (action, type), its
  policy index, so each request only scans the rows of its own action and type; rules
  with ``*`` targets are expanded into one row per (action, type) so the index can hold
  them; thresholds are numbers; ``batch_enforce``; the per-request log line is disabled.
* **oso**: each rule shape is one Polar rule over a table of ground facts, so Polar's rule
  index on ground arguments (action, type, ...) picks the candidate facts; the request's
  own dicts are passed in; ``query_rule_once``. No batch API.
* **vakt**: ``MemoryStorage`` + ``RulesChecker`` (attribute-based policies), ``Guard``;
  ``resource.owner == principal.tenant`` is a small custom ``Rule`` (vakt's documented
  extension point). vakt's memory storage has no index, so each request scans every policy.
* **py-abac**: ``MemoryStorage`` + ``PDP`` (deny-overrides), the action as the policy
  target (checked before the rules), ``EqualsAttribute`` for the owner test,
  ``AccessRequest`` built directly (no marshmallow validation per request). py-abac's
  memory storage has no index either.
* **regorus** (``gordon-to-regorus``, Microsoft's Rust Rego): Rego written for speed. The
  rules are data, not code: rules of one shape (effect, which targets are ``*``, which
  conditions are set) form one table in ``data``, indexed by action and type
  (``data.t0[input.action][input.resource.type]`` is the list of that bucket's condition
  tuples; a ``*`` target is simply not an index level), and each shape has one rule body
  that iterates only its bucket and tests that shape's conditions. ``allow if { not deny;
  permit }`` (forbid overrides). ``regorus`` is the compiled program: the policy and data
  compiled once into an RVM ``Program`` (``Program.compile_from_modules``, entry point
  ``data.bench.allow``), loaded into one ``Rvm``; per request ``set_input_json`` (the request
  dict as JSON, orjson when installed) and ``execute``. ``regorus (interpreted)`` is the
  tree-walking ``Engine`` on the same Rego and data: ``set_input`` (the request dict
  converted directly, no JSON) and ``eval_rule("data.bench.allow")``.
* **cel** (``common-expression-language``, the Rust ``cel`` crate): each rule's condition
  compiled once into a CEL ``Program`` (``cel.compile``), a dict index
  ``{(action, type): ([forbids], [permits])}`` built at load with the ``*`` rules merged into
  every bucket they match (for every action x type of the scenario; a pair outside them
  gets its bucket built on first use). Per request one ``cel.Context`` with the request's fields as flat variables
  (``dept``, ``tenant``, ``owner``, ``score``, ``role``; only those the set uses: building a
  context costs about 2 µs per variable and nested maps cost far more), then the bucket's
  forbids, then its permits, stopping at the first that holds (a bucket without permits is
  a deny without evaluating anything).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .scenarios import Rule, Scenario, _num

__all__ = ["ADAPTERS", "PEERS", "VARIANTS", "Adapter", "availability", "get_adapter"]


class Adapter:
    name = "?"
    #: the PyPI distribution that provides it
    package = "?"
    #: True when the engine has a batch API used by ``run``
    batch = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(usable, message)."""
        raise NotImplementedError

    def load(self, scn: Scenario) -> None:
        raise NotImplementedError

    def run(self, reqs: Sequence[dict]) -> list:
        raise NotImplementedError

    def allowed(self, raw: list) -> list[bool]:
        return [bool(x) for x in raw]


def _try_import(mod: str, package: str) -> tuple[bool, str]:
    import warnings

    try:
        with warnings.catch_warnings():  # old peers warn about their own dependencies
            warnings.simplefilter("ignore")
            importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken native extension
        return False, (f"{package} is not installed or does not import ({type(e).__name__}: {e}); "
                       f"install the bench extra: pip install -e '.[bench]'")
    return True, "ok"


# --------------------------------------------------------------------------- policylang
class PolicylangAdapter(Adapter):
    name = "policylang"
    package = "policylang"

    def __init__(self, cache_size: int = 0, many: bool = False, share: PolicylangAdapter | None = None):
        self.cache_size = cache_size
        self.many = many
        #: another policylang adapter whose engine this one reuses (loaded before it)
        self.share = share
        if many:
            self.name = "policylang (decide_many)"
            self.batch = True
        if cache_size:
            self.name = "policylang (cached)"

    @classmethod
    def available(cls):
        try:
            import policylang
            policylang.Engine  # noqa: B018
            policylang.loads  # noqa: B018
        except Exception as e:  # noqa: BLE001 - any failure means "not usable yet"
            return False, f"policylang.Engine is not available yet ({type(e).__name__}: {e})"
        return True, "ok"

    def load(self, scn: Scenario) -> None:
        import policylang
        if self.share is not None and getattr(self.share, "engine", None) is not None:
            self.engine = self.share.engine
            return
        ps = policylang.loads(scn.text, name=f"{scn.name}.policy")
        self.engine = policylang.Engine(ps, cache_size=self.cache_size)

    def run(self, reqs):
        if self.many:
            return self.engine.decide_many(reqs)
        decide = self.engine.decide
        return [decide(r) for r in reqs]

    def allowed(self, raw):
        return [d.decision == "allow" for d in raw]


class PolicylangJsonAdapter(PolicylangAdapter):
    """policylang deciding each request's JSON text (``Engine.decide_json``, what the
    service does with a body); the texts are made at load (``json.dumps`` of each request
    of the scenario) and found by the request's identity, so a run pays one dict lookup
    per request besides the decision."""

    name = "policylang (decide_json)"

    def load(self, scn: Scenario) -> None:
        super().load(scn)
        self.bodies = {id(r): json.dumps(r).encode() for r in scn.requests}

    def run(self, reqs):
        decide, bodies = self.engine.decide_json, self.bodies
        return [decide(bodies[id(r)]) for r in reqs]


# --------------------------------------------------------------------------- cedar
def _cedar_type(t: str) -> str:
    return "".join(p.capitalize() for p in t.split("_"))


def _cedar_str(s: str) -> str:
    return json.dumps(s)


def _cedar_dec(x: float) -> str:
    return f'decimal("{x:.4f}")'


class CedarAdapter(Adapter):
    name = "cedar"
    package = "cedarpy"
    batch = True

    @classmethod
    def available(cls):
        return _try_import("cedarpy", cls.package)

    @staticmethod
    def policy_text(scn: Scenario) -> str:
        out = []
        for r in scn.rules:
            for types in ([None] if r.types is None else [(t,) for t in r.types]):
                if r.actions is None:
                    act = "action"
                elif len(r.actions) == 1:
                    act = f'action == Action::{_cedar_str(r.actions[0])}'
                else:
                    act = "action in [" + ", ".join(f"Action::{_cedar_str(a)}" for a in r.actions) + "]"
                res = "resource" if types is None else f"resource is {_cedar_type(types[0])}"
                conds = []
                if r.role is not None:
                    conds.append(f"principal.role == {_cedar_str(r.role)}")
                if r.dept is not None:
                    conds.append(f"principal.dept == {_cedar_str(r.dept)}")
                if r.risk_below is not None:
                    conds.append(f"context.risk.lessThan({_cedar_dec(r.risk_below)})")
                if r.risk_above is not None:
                    conds.append(f"context.risk.greaterThan({_cedar_dec(r.risk_above)})")
                if r.owner_is_tenant:
                    conds.append("resource.owner == principal.tenant")
                when = (" when { " + " && ".join(conds) + " }") if conds else ""
                out.append(f'@id({_cedar_str(r.id)})\n{r.effect} (principal, {act}, {res}){when};')
        return "\n".join(out) + "\n"

    @staticmethod
    def entities_json(scn: Scenario) -> str:
        ents = []
        for kind, table in scn.entities.items():
            ctype = _cedar_type(kind)
            for eid, attrs in table.items():
                ents.append({"uid": {"type": ctype, "id": eid}, "attrs": attrs, "parents": []})
        return json.dumps(ents)

    def load(self, scn: Scenario) -> None:
        import cedarpy
        self.cedarpy = cedarpy
        self.ps = cedarpy.PolicySet.from_str(self.policy_text(scn))
        self.ents = cedarpy.Entities.from_json_str(self.entities_json(scn))
        self.types = {t: _cedar_type(t) for t in scn.entities}

    def run(self, reqs):
        types = self.types
        creqs = []
        for r in reqs:
            p, res = r["principal"], r["resource"]
            creqs.append({
                "principal": {"type": types[p["kind"]], "id": p["id"]},
                "action": {"type": "Action", "id": r["action"]},
                "resource": {"type": types[res["type"]], "id": res["id"]},
                "context": {"risk": {"__extn": {"fn": "decimal", "arg": f'{r["risk"]["score"]:.4f}'}}},
            })
        return self.cedarpy.is_authorized_batch(creqs, self.ps, self.ents)

    def allowed(self, raw):
        for x in raw:
            if x.diagnostics.errors:
                raise AssertionError(f"cedar evaluation errors: {x.diagnostics.errors}")
        return [x.allowed for x in raw]


# --------------------------------------------------------------------------- casbin
CASBIN_MODEL = """
[request_definition]
r = act, typ, sub, obj, risk

[policy_definition]
p = act, typ, role, dept, below, above, own, eft

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = r.act == p.act && r.typ == p.typ && (p.role == "" || r.sub.role == p.role) && (p.dept == "" || r.sub.dept == p.dept) && r.risk < p.below && r.risk > p.above && (p.own == "" || r.obj.owner == r.sub.tenant)
"""


class CasbinAdapter(Adapter):
    name = "casbin"
    package = "casbin"
    batch = True  # batch_enforce (a loop inside casbin)

    @classmethod
    def available(cls):
        return _try_import("casbin", cls.package)

    @staticmethod
    def rows(scn: Scenario) -> list[list]:
        rows = []
        for r in scn.rules:
            for a in (r.actions if r.actions is not None else scn.actions):
                for t in (r.types if r.types is not None else scn.types):
                    rows.append([
                        a, t, r.role or "", r.dept or "",
                        r.risk_below if r.risk_below is not None else 2.0,   # always true
                        r.risk_above if r.risk_above is not None else -1.0,  # always true
                        "1" if r.owner_is_tenant else "",
                        "allow" if r.effect == "permit" else "deny"])
        return rows

    def load(self, scn: Scenario) -> None:
        import casbin
        logging.getLogger("casbin").setLevel(logging.ERROR)
        logging.getLogger("casbin.enforcer").disabled = True
        from casbin.model import FastModel
        model = FastModel([0, 1])
        model.load_model_from_text(CASBIN_MODEL)
        self.e = casbin.FastEnforcer(model, cache_key_order=[0, 1])
        self.e.add_policies(self.rows(scn))

    def run(self, reqs):
        return self.e.batch_enforce([
            (r["action"], r["resource"]["type"], r["principal"]["attrs"], r["resource"]["attrs"],
             r["risk"]["score"]) for r in reqs])


# --------------------------------------------------------------------------- oso
def _polar(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    return repr(float(v))


class OsoAdapter(Adapter):
    name = "oso"
    package = "oso"

    @classmethod
    def available(cls):
        return _try_import("oso", cls.package)

    @staticmethod
    def policy_text(scn: Scenario) -> str:
        """One fact table per rule shape, one Polar rule per shape reading it."""
        shapes: dict[tuple, list[Rule]] = {}
        for r in scn.rules:
            key = (r.effect, r.actions is not None, r.types is not None, r.role is not None,
                   r.dept is not None, r.risk_below is not None, r.risk_above is not None,
                   r.owner_is_tenant)
            shapes.setdefault(key, []).append(r)
        out = [
            "decide(p, act, r, risk) if not forbidden(p, act, r, risk) and permitted(p, act, r, risk);",
            # never hold; they only keep Polar's validation quiet (a set without forbids,
            # and the built-in `allow` rule type, which our 4-argument rule does not use)
            "forbidden(_p, _act, _r, _risk) if false;",
            "permitted(_p, _act, _r, _risk) if false;",
            "allow(_actor, _action, _resource) if false;",
        ]
        for n, (key, rules) in enumerate(shapes.items()):
            effect, has_a, has_t, has_role, has_dept, has_below, has_above, own = key
            head = "permitted" if effect == "permit" else "forbidden"
            fact = f"{head}_{n}"
            params = ["act" if has_a else "_", "r.type" if has_t else "_"]
            conds = []
            if has_role:
                params.append("p.role")
            if has_dept:
                params.append("p.dept")
            if has_below:
                params.append("below")
                conds.append("risk < below")
            if has_above:
                params.append("above")
                conds.append("risk > above")
            if own:
                conds.append("r.attrs.owner = p.tenant")
            # facts with only wildcards are plain rules
            arity = len(params) - (not has_a) - (not has_t)
            body = []
            if arity:
                fparams = [p for p in params if p != "_"]
                body.append(f"{fact}({', '.join(fparams)})")
            body += conds
            used = {"act": has_a, "risk": has_below or has_above, "p": has_role or has_dept or own,
                    "r": has_t or own}
            hp = [("" if used["p"] else "_") + "p", ("" if used["act"] else "_") + "act",
                  ("" if used["r"] else "_") + "r", ("" if used["risk"] else "_") + "risk"]
            out.append(f"{head}({', '.join(hp)}) if {' and '.join(body) if body else 'true'};")
            for r in rules:
                for a in (r.actions if has_a else [None]):
                    for t in (r.types if has_t else [None]):
                        vals = [v for v in (a, t, r.role, r.dept, r.risk_below, r.risk_above) if v is not None]
                        if vals:
                            out.append(f"{fact}({', '.join(_polar(v) for v in vals)});")
        return "\n".join(out) + "\n"

    def load(self, scn: Scenario) -> None:
        from oso import Oso
        self.oso = Oso()
        self.oso.load_str(self.policy_text(scn))

    def run(self, reqs):
        q = self.oso.query_rule_once
        return [q("decide", r["principal"]["attrs"], r["action"], r["resource"], r["risk"]["score"])
                for r in reqs]


# --------------------------------------------------------------------------- vakt
class VaktAdapter(Adapter):
    name = "vakt"
    package = "vakt"

    @classmethod
    def available(cls):
        return _try_import("vakt", cls.package)

    def load(self, scn: Scenario) -> None:
        import vakt
        from vakt.rules import And, Eq, Greater, Less
        from vakt.rules import Any as VAny
        from vakt.rules.base import Rule as VRule

        logging.getLogger("vakt").setLevel(logging.ERROR)

        class OwnerIsSubjectTenant(VRule):
            """``resource.owner == principal.tenant``."""

            def satisfied(self, what, inquiry=None):
                return inquiry is not None and what == inquiry.subject.get("tenant")

        self.vakt = vakt
        storage = vakt.MemoryStorage()
        for r in scn.rules:
            subj = {}
            if r.role is not None:
                subj["role"] = Eq(r.role)
            if r.dept is not None:
                subj["dept"] = Eq(r.dept)
            res = {}
            if r.types is not None:
                res["type"] = Eq(r.types[0]) if len(r.types) == 1 else vakt.rules.In(*r.types)
            if r.owner_is_tenant:
                res["owner"] = OwnerIsSubjectTenant()
            risk = [x for x in ((Less(r.risk_below) if r.risk_below is not None else None),
                                (Greater(r.risk_above) if r.risk_above is not None else None)) if x]
            ctx = {"risk": risk[0] if len(risk) == 1 else And(*risk)} if risk else {}
            storage.add(vakt.Policy(
                r.id,
                actions=[VAny()] if r.actions is None else [Eq(a) for a in r.actions],
                subjects=[subj or VAny()],
                resources=[res or VAny()],
                context=ctx,
                effect=vakt.ALLOW_ACCESS if r.effect == "permit" else vakt.DENY_ACCESS,
            ))
        self.guard = vakt.Guard(storage, vakt.RulesChecker())

    def run(self, reqs):
        Inquiry, check = self.vakt.Inquiry, self.guard.is_allowed_check
        out = []
        for r in reqs:
            res = r["resource"]
            out.append(check(Inquiry(
                subject=r["principal"]["attrs"], action=r["action"],
                resource={"type": res["type"], **res["attrs"]},
                context={"risk": r["risk"]["score"]})))
        return out


# --------------------------------------------------------------------------- py-abac
class PyAbacAdapter(Adapter):
    name = "py-abac"
    package = "py-abac"

    @classmethod
    def available(cls):
        return _try_import("py_abac", cls.package)

    @staticmethod
    def policies_json(scn: Scenario) -> list[dict]:
        out = []
        for r in scn.rules:
            subject, resource, context = {}, {}, {}
            if r.role is not None:
                subject["$.role"] = {"condition": "Equals", "value": r.role}
            if r.dept is not None:
                subject["$.dept"] = {"condition": "Equals", "value": r.dept}
            if r.types is not None:
                resource["$.type"] = ({"condition": "Equals", "value": r.types[0]} if len(r.types) == 1
                                      else {"condition": "IsIn", "values": list(r.types)})
            if r.owner_is_tenant:
                resource["$.owner"] = {"condition": "EqualsAttribute", "ace": "subject", "path": "$.tenant"}
            risk = []
            if r.risk_below is not None:
                risk.append({"condition": "Lt", "value": r.risk_below})
            if r.risk_above is not None:
                risk.append({"condition": "Gt", "value": r.risk_above})
            if risk:
                context["$.risk"] = risk[0] if len(risk) == 1 else {"condition": "AllOf", "values": risk}
            out.append({
                "uid": r.id, "description": r.id,
                "effect": "allow" if r.effect == "permit" else "deny",
                "rules": {"subject": subject, "resource": resource, "action": {}, "context": context},
                "targets": {"action_id": "*" if r.actions is None else list(r.actions)},
                "priority": 0,
            })
        return out

    def load(self, scn: Scenario) -> None:
        import warnings

        with warnings.catch_warnings():  # py-abac 0.4 uses arguments marshmallow 3.x deprecates
            warnings.simplefilter("ignore")
            from py_abac import PDP, AccessRequest, EvaluationAlgorithm, Policy
            from py_abac.storage.memory import MemoryStorage

        logging.getLogger("py_abac").setLevel(logging.ERROR)
        st = MemoryStorage()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for p in self.policies_json(scn):
                st.add(Policy.from_json(p))
        self.pdp = PDP(st, EvaluationAlgorithm.DENY_OVERRIDES)
        self.AccessRequest = AccessRequest

    def run(self, reqs):
        AR, allowed = self.AccessRequest, self.pdp.is_allowed
        out = []
        for r in reqs:
            p, res = r["principal"], r["resource"]
            out.append(allowed(AR(
                subject={"id": p["id"], "attributes": p["attrs"]},
                resource={"id": res["id"], "attributes": {"type": res["type"], **res["attrs"]}},
                action={"id": r["action"], "attributes": {}},
                context={"risk": r["risk"]["score"]})))
        return out


# --------------------------------------------------------------------------- regorus
def _shape(r: Rule) -> tuple:
    """What a rule's table and body depend on: effect, which targets are set, which conditions."""
    return (r.effect, r.actions is not None, r.types is not None, r.role is not None,
            r.dept is not None, r.risk_below is not None, r.risk_above is not None,
            r.owner_is_tenant)


class RegorusAdapter(Adapter):
    """The compiled RVM program (``regorus.Program`` + ``regorus.Rvm``)."""

    name = "regorus"
    package = "gordon-to-regorus"
    entry = "data.bench.allow"

    @classmethod
    def available(cls):
        ok, why = _try_import("regorus", cls.package)
        if ok:
            import regorus
            if not hasattr(regorus, "Program") or not hasattr(regorus, "Rvm"):
                return False, (f"{cls.package} {_version(cls.package)} has no compiled program "
                               "(regorus.Program/Rvm); it needs 0.13 or later")
        return ok, why

    @staticmethod
    def policy_and_data(scn: Scenario) -> tuple[str, dict]:
        """(Rego module, data): one table and one rule body per rule shape."""
        shapes: dict[tuple, list[Rule]] = {}
        for r in scn.rules:
            shapes.setdefault(_shape(r), []).append(r)
        body = ["package bench", "", "import rego.v1", "", "default allow := false", "",
                # a set may have no forbids (S) or no permits
                "default deny := false", "", "default permit := false", "",
                "allow if {", "\tnot deny", "\tpermit", "}", ""]
        data: dict[str, Any] = {}
        for n, (key, rules) in enumerate(shapes.items()):
            effect, has_a, has_t, has_role, has_dept, has_below, has_above, own = key
            table = f"t{n}"
            path = f"data.{table}" + ("[input.action]" if has_a else "") + (
                "[input.resource.type]" if has_t else "")
            conds, k = [], 0
            for flag, test in ((has_role, "{r} == input.principal.attrs.role"),
                               (has_dept, "{r} == input.principal.attrs.dept"),
                               (has_below, "input.risk.score < {r}"),
                               (has_above, "input.risk.score > {r}")):
                if flag:
                    conds.append(test.format(r=f"r[{k}]"))
                    k += 1
            if own:
                conds.append("input.resource.attrs.owner == input.principal.attrs.tenant")
            head = "permit" if effect == "permit" else "deny"
            body += [f"{head} if {{", f"\tsome r in {path}", *(f"\t{c}" for c in conds), "}", ""]
            tab: Any = {} if (has_a or has_t) else []
            for r in rules:
                row = [v for v in (r.role, r.dept, r.risk_below, r.risk_above) if v is not None]
                for a in (r.actions if has_a else [None]):
                    for t in (r.types if has_t else [None]):
                        node = tab
                        keys = [x for x in (a, t) if x is not None]
                        for i, x in enumerate(keys):
                            node = node.setdefault(x, {} if i < len(keys) - 1 else [])
                        node.append(row)
            data[table] = tab
        return "\n".join(body), data

    def load(self, scn: Scenario) -> None:
        import regorus
        rego, data = self.policy_and_data(scn)
        data_json = json.dumps(data)
        self.program = regorus.Program.compile_from_modules(data_json, [("bench.rego", rego)],
                                                            [self.entry])
        self.vm = regorus.Rvm()
        self.vm.load_program(self.program)
        self.vm.set_data_json(data_json)
        try:
            import orjson
            self.dumps = lambda x, _d=orjson.dumps: _d(x).decode()
        except ImportError:
            self.dumps = json.dumps

    def run(self, reqs):
        vm, dumps = self.vm, self.dumps
        set_input, execute = vm.set_input_json, vm.execute
        out = []
        for r in reqs:
            set_input(dumps(r))
            out.append(execute())
        return out

    def allowed(self, raw):
        bad = [x for x in raw if x not in ("true", "false")]
        if bad:
            raise AssertionError(f"regorus returned {bad[0]!r}, not a boolean")
        return [x == "true" for x in raw]


class RegorusInterpretedAdapter(RegorusAdapter):
    """The tree-walking interpreter (``regorus.Engine``) on the same Rego and data."""

    name = "regorus (interpreted)"

    @classmethod
    def available(cls):
        return _try_import("regorus", cls.package)

    def load(self, scn: Scenario) -> None:
        import regorus
        rego, data = self.policy_and_data(scn)
        self.engine = regorus.Engine()
        self.engine.add_policy("bench.rego", rego)
        self.engine.add_data_json(json.dumps(data))

    def run(self, reqs):
        set_input, ev, entry = self.engine.set_input, self.engine.eval_rule, self.entry
        out = []
        for r in reqs:
            set_input(r)
            out.append(ev(entry))
        return out

    def allowed(self, raw):
        bad = [x for x in raw if not isinstance(x, bool)]
        if bad:
            raise AssertionError(f"regorus returned {bad[0]!r}, not a boolean")
        return list(raw)


# --------------------------------------------------------------------------- cel
#: CEL variable of each neutral condition (the request's fields, flattened)
_CEL_VARS = ("role", "dept", "tenant", "owner", "score")


class CelAdapter(Adapter):
    name = "cel"
    package = "common-expression-language"

    @classmethod
    def available(cls):
        ok, why = _try_import("cel", cls.package)
        if ok:
            import cel
            if not hasattr(cel, "compile") or not hasattr(cel, "Context"):
                return False, (f"the `cel` module here is not {cls.package} (no cel.compile/"
                               "cel.Context); another package may provide `cel`")
        return ok, why

    @staticmethod
    def condition(r: Rule) -> str | None:
        """The rule's condition in CEL (None: no condition)."""
        conds = []
        if r.role is not None:
            conds.append(f"role == {json.dumps(r.role)}")
        if r.dept is not None:
            conds.append(f"dept == {json.dumps(r.dept)}")
        if r.risk_below is not None:
            conds.append(f"score < {_num(r.risk_below)}")
        if r.risk_above is not None:
            conds.append(f"score > {_num(r.risk_above)}")
        if r.owner_is_tenant:
            conds.append("owner == tenant")
        return " && ".join(conds) or None

    def load(self, scn: Scenario) -> None:
        import cel
        self.Context = cel.Context
        raw: dict[tuple, tuple[list, list]] = {}
        used: set[str] = set()
        for r in scn.rules:
            src = self.condition(r)
            prog = None if src is None else cel.compile(src)
            if prog is not None:
                used.update(prog.variables())
            for a in (r.actions if r.actions is not None else (None,)):
                for t in (r.types if r.types is not None else (None,)):
                    raw.setdefault((a, t), ([], []))[r.effect == "permit"].append(prog)
        self.raw = raw
        self.used = used
        self.index = {(a, t): self._bucket(a, t) for a in scn.actions for t in scn.types}

    def _bucket(self, a: str, t: str) -> tuple[list, list]:
        f, p = [], []
        for key in ((a, t), (a, None), (None, t), (None, None)):
            b = self.raw.get(key)
            if b:
                f += b[0]
                p += b[1]
        return f, p

    def run(self, reqs):
        index, Context, used = self.index, self.Context, self.used
        need_role, need_dept = "role" in used, "dept" in used
        need_tenant, need_owner, need_score = "tenant" in used, "owner" in used, "score" in used
        out = []
        for r in reqs:
            res = r["resource"]
            key = (r["action"], res["type"])
            bucket = index.get(key)
            if bucket is None:
                bucket = index[key] = self._bucket(*key)
            forbids, permits = bucket
            if not permits:
                out.append(False)
                continue
            pa = r["principal"].get("attrs") or {}
            v = {}
            if need_role:
                v["role"] = pa.get("role")
            if need_dept:
                v["dept"] = pa.get("dept")
            if need_tenant:
                v["tenant"] = pa.get("tenant")
            if need_owner:
                v["owner"] = (res.get("attrs") or {}).get("owner")
            if need_score:
                v["score"] = r["risk"]["score"]
            ctx = Context(variables=v)
            decision = False
            for prog in forbids:
                if prog is None or prog.execute(ctx) is True:
                    break
            else:
                for prog in permits:
                    if prog is None or prog.execute(ctx) is True:
                        decision = True
                        break
            out.append(decision)
        return out


def _version(package: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


PEERS: dict[str, type[Adapter]] = {
    "cedar": CedarAdapter,
    "casbin": CasbinAdapter,
    "oso": OsoAdapter,
    "vakt": VaktAdapter,
    "py-abac": PyAbacAdapter,
    "regorus": RegorusAdapter,
    "regorus (interpreted)": RegorusInterpretedAdapter,
    "cel": CelAdapter,
}
ADAPTERS: dict[str, type[Adapter]] = {"policylang": PolicylangAdapter, **PEERS}

#: other configurations of an adapter, by name (``benchmarks/instructions.py`` counts
#: them; ``compare.py`` times them itself): the default request cache, every request of
#: the stream decided once before the count, so each counted decision is a cache hit
VARIANTS: dict[str, Callable[[], Adapter]] = {
    "policylang (cache hit)": lambda: PolicylangAdapter(cache_size=10_000),
    "policylang (decide_json cache hit)": lambda: PolicylangJsonAdapter(cache_size=10_000),
}


def get_adapter(name: str) -> Adapter:
    return ADAPTERS[name]()


def availability() -> dict[str, tuple[bool, str]]:
    return {name: cls.available() for name, cls in ADAPTERS.items()}
