"""Seeded, named benchmark scenarios: policy text, entity data and request streams.

Everything here is a pure function of its arguments (sizes and a seed): the same call
gives the same policy text, the same entity data and the same requests, on any machine.
The benchmarks, the regression guard and ``compare.py`` all build their inputs here, so
every engine is measured on identical data.

Two families:

* **RBAC** (scenario S, issue 7): a handful of rules, each letting one role (of 5) do some
  of 6 actions on one of 5 resource types.
* **ABAC** (scenarios M and L of issue 7, and the 10 / 1,000 / 10,000-rule sets of
  issue 3): ``n`` permit rules of the shape::

      permit * to A on T
        when principal.dept == D and risk.score < H and resource.owner == principal.tenant

  with ``A`` from 50 actions, ``T`` from 20 resource types, ``D`` from 20 departments and
  ``H`` in 0.50-0.95, plus 10 forbids: risk above 0.9 (anything), four action+department
  pairs, five resource types with risk above 0.6.

Each rule is also kept in a small neutral form (:class:`Rule`) so that ``compare.py`` can
translate the same set into each peer engine's language, and so that
:meth:`Scenario.expected` (a plain, obviously-correct evaluator of that form) can say
what every engine must decide.

Requests are docs/requests.md#request dicts that carry their attributes inline (principal and resource
attrs equal to the entity data), so an engine can decide from the request alone; the
same attrs are also available as entity data (docs/language.md#entity-data) in :attr:`Scenario.entities`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

__all__ = [
    "ACTIONS",
    "TYPES",
    "DEPARTMENTS",
    "ROLES",
    "Rule",
    "Scenario",
    "rbac_scenario",
    "abac_scenario",
    "scenario",
    "scenario_s",
    "scenario_m",
    "scenario_l",
    "issue3_set",
    "ISSUE3_SIZES",
    "varied_policy_text",
    "strip_attrs",
    "DEFAULT_SEED",
]

DEFAULT_SEED = 20240607

#: 50 action names (none is a policylang keyword, a Cedar reserved word or a Polar one).
ACTIONS: tuple[str, ...] = (
    "read", "list", "write", "create", "update", "delete", "deploy", "rollback",
    "approve", "merge", "comment", "review", "archive", "restore", "export", "ingest",
    "share", "download", "upload", "execute", "schedule", "cancel", "pause", "resume",
    "scale", "restart", "rotate", "revoke", "invite", "tag", "label", "publish",
    "unpublish", "fork", "clone", "lock", "unlock", "query", "train", "evaluate",
    "annotate", "subscribe", "unsubscribe", "configure", "inspect", "audit", "backup",
    "migrate", "purge", "transfer",
)

#: 20 resource types.
TYPES: tuple[str, ...] = (
    "repo", "service", "bucket", "ticket", "document", "dataset", "model", "secret",
    "database", "table", "pipeline", "cluster", "namespace", "queue", "topic",
    "dashboard", "notebook", "endpoint", "function", "vault",
)

#: 20 departments.
DEPARTMENTS: tuple[str, ...] = (
    "engineering", "research", "finance", "legal", "sales", "marketing", "support",
    "security", "platform", "data", "design", "hr", "operations", "procurement",
    "compliance", "infra", "mobile", "web", "ml", "qa",
)

#: 5 roles (scenario S).
ROLES: tuple[str, ...] = ("viewer", "editor", "maintainer", "admin", "auditor")

#: tenants owning resources and employing principals
TENANTS: tuple[str, ...] = tuple(f"tenant-{i:02d}" for i in range(10))

#: rule counts of the issue-3 sets
ISSUE3_SIZES: tuple[int, ...] = (10, 1_000, 10_000)

PRINCIPAL_KIND = "agent"


# --------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """One rule in a neutral form every adapter can translate.

    A rule applies when the action is in ``actions`` (``None``: any), the resource type in
    ``types`` (``None``: any) and every condition that is set holds:
    ``principal.role == role``, ``principal.dept == dept``, ``risk.score < risk_below``,
    ``risk.score > risk_above``, ``resource.owner == principal.tenant``.
    """

    id: str
    effect: str  # "permit" | "forbid"
    actions: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    role: str | None = None
    dept: str | None = None
    risk_below: float | None = None
    risk_above: float | None = None
    owner_is_tenant: bool = False

    def holds(self, req: dict) -> bool:
        """Plain evaluation against a docs/requests.md#request request (the oracle for every engine)."""
        action = req["action"] if isinstance(req["action"], str) else req["action"]["name"]
        if self.actions is not None and action not in self.actions:
            return False
        res = req["resource"]
        if self.types is not None and res["type"] not in self.types:
            return False
        pattrs = req["principal"].get("attrs") or {}
        if self.role is not None and pattrs.get("role") != self.role:
            return False
        if self.dept is not None and pattrs.get("dept") != self.dept:
            return False
        score = req["risk"]["score"] if (self.risk_below is not None or self.risk_above is not None) else None
        if self.risk_below is not None and not score < self.risk_below:
            return False
        if self.risk_above is not None and not score > self.risk_above:
            return False
        if self.owner_is_tenant and (res.get("attrs") or {}).get("owner") != pattrs.get("tenant"):
            return False
        return True

    def to_policy(self) -> str:
        """The rule in policylang syntax (docs/language.md)."""
        acts = "*" if self.actions is None else ", ".join(self.actions)
        types = "*" if self.types is None else ", ".join(self.types)
        conds = []
        if self.role is not None:
            conds.append(f'principal.role == "{self.role}"')
        if self.dept is not None:
            conds.append(f'principal.dept == "{self.dept}"')
        if self.risk_below is not None:
            conds.append(f"risk.score < {_num(self.risk_below)}")
        if self.risk_above is not None:
            conds.append(f"risk.score > {_num(self.risk_above)}")
        if self.owner_is_tenant:
            conds.append("resource.owner == principal.tenant")
        text = f'@id("{self.id}")\n{self.effect} * to {acts} on {types}'
        if conds:
            text += "\n  when " + " and ".join(conds)
        # a `because` keeps the set free of W106 warnings, as a well-kept set would be
        return text + f'\n  because "{self.id}"\n'


def _num(x: float) -> str:
    s = repr(float(x))
    return s if "." in s else s + ".0"


# --------------------------------------------------------------------------- scenario
@dataclass
class Scenario:
    """A named, seeded benchmark input."""

    name: str
    seed: int
    rules: tuple[Rule, ...]
    #: {"agent": {id: attrs}, "<type>": {id: {"owner": ...}}} (docs/language.md#entity-data)
    entities: dict[str, dict[str, dict[str, Any]]]
    #: docs/requests.md#request request dicts carrying attrs inline
    requests: list[dict]
    actions: tuple[str, ...]
    types: tuple[str, ...]
    description: str = ""
    _index: dict = field(default_factory=dict, repr=False)

    @cached_property
    def text(self) -> str:
        """The policy set in policylang syntax."""
        head = f"# scenario {self.name} (seed {self.seed}): {len(self.rules)} rules\n"
        return head + "\n".join(r.to_policy() for r in self.rules)

    @property
    def permits(self) -> list[Rule]:
        return [r for r in self.rules if r.effect == "permit"]

    @property
    def forbids(self) -> list[Rule]:
        return [r for r in self.rules if r.effect == "forbid"]

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return self.entities[PRINCIPAL_KIND]

    def _candidates(self, action: str, rtype: str) -> list[Rule]:
        idx = self._index
        if not idx:
            for r in self.rules:
                for a in (r.actions if r.actions is not None else (None,)):
                    for t in (r.types if r.types is not None else (None,)):
                        idx.setdefault((a, t), []).append(r)
        return (idx.get((action, rtype), []) + idx.get((action, None), [])
                + idx.get((None, rtype), []) + idx.get((None, None), []))

    def expected(self, req: dict) -> str:
        """The decision every engine must give: forbid wins, then permit, else deny."""
        action = req["action"] if isinstance(req["action"], str) else req["action"]["name"]
        cands = self._candidates(action, req["resource"]["type"])
        if any(r.effect == "forbid" and r.holds(req) for r in cands):
            return "deny"
        if any(r.effect == "permit" and r.holds(req) for r in cands):
            return "allow"
        return "deny"

    def expected_all(self) -> list[str]:
        return [self.expected(r) for r in self.requests]

    def allow_share(self) -> float:
        ex = self.expected_all()
        return ex.count("allow") / max(1, len(ex))


def _request(uid: str, user: dict, action: str, rtype: str, rid: str, rattrs: dict,
             score: float) -> dict:
    return {
        "principal": {"id": uid, "kind": PRINCIPAL_KIND, "attrs": dict(user)},
        "action": action,
        "resource": {"type": rtype, "id": rid, "attrs": dict(rattrs)},
        "risk": {"score": score},
    }


def _risk(rng: random.Random, below: float | None = None) -> float:
    """Two-decimal risk scores (exact in every engine's number type)."""
    if below is None:
        return round(rng.random(), 2)
    return round(rng.uniform(0.0, below - 0.01), 2)


# --------------------------------------------------------------------------- RBAC (S)
def rbac_scenario(n_rules: int = 10, n_requests: int = 2_000, seed: int = DEFAULT_SEED,
                  n_users: int = 200, n_resources: int = 500, name: str = "S") -> Scenario:
    """Scenario S: ``n_rules`` RBAC permits, a role (of 5) may do some of 6 actions on one
    of 5 types. About half the requests target a rule (a user with that role, one of its
    actions, its type), the rest are random; roughly half are allowed."""
    rng = random.Random(f"rbac/{seed}/{n_rules}")
    actions = ACTIONS[:6]
    types = TYPES[:5]
    rules = []
    for i in range(n_rules):
        k = rng.randint(1, 3)
        rules.append(Rule(
            id=f"rbac-{i:03d}", effect="permit",
            actions=tuple(sorted(rng.sample(actions, k), key=actions.index)),
            types=(rng.choice(types),), role=rng.choice(ROLES)))
    users = {f"agent-{i:05d}": {"role": rng.choice(ROLES), "tenant": rng.choice(TENANTS)}
             for i in range(n_users)}
    by_role: dict[str, list[str]] = {}
    for uid, u in users.items():
        by_role.setdefault(u["role"], []).append(uid)
    resources: dict[str, dict[str, dict]] = {t: {} for t in types}
    for i in range(n_resources):
        t = rng.choice(types)
        resources[t][f"{t}-{i:05d}"] = {"owner": rng.choice(TENANTS)}
    res_ids = {t: list(v) for t, v in resources.items()}
    uids = list(users)
    reqs = []
    for _ in range(n_requests):
        if rng.random() < 0.5:
            r = rng.choice(rules)
            uid = rng.choice(by_role.get(r.role) or uids)
            action, rtype = rng.choice(r.actions), r.types[0]
        else:
            uid, action, rtype = rng.choice(uids), rng.choice(actions), rng.choice(types)
        rid = rng.choice(res_ids[rtype])
        reqs.append(_request(uid, users[uid], action, rtype, rid, resources[rtype][rid],
                             _risk(rng)))
    ents = {PRINCIPAL_KIND: users, **resources}
    return Scenario(name, seed, tuple(rules), ents, reqs, actions, types,
                    description=f"{n_rules} RBAC rules: 5 roles, 6 actions, 5 types")


# --------------------------------------------------------------------------- ABAC (M, L)
#: the four forbidden action+department pairs and the five risky types
FORBIDDEN_PAIRS = (("delete", "sales"), ("deploy", "marketing"), ("export", "support"),
                   ("purge", "research"))
RISKY_TYPES = ("secret", "vault", "database", "cluster", "pipeline")


def abac_forbids() -> list[Rule]:
    rules = [Rule(id="forbid-high-risk", effect="forbid", risk_above=0.9)]
    for a, d in FORBIDDEN_PAIRS:
        rules.append(Rule(id=f"forbid-{a}-by-{d}", effect="forbid", actions=(a,), dept=d))
    for t in RISKY_TYPES:
        rules.append(Rule(id=f"forbid-risky-{t}", effect="forbid", types=(t,), risk_above=0.6))
    return rules


def abac_scenario(n_rules: int, n_requests: int = 2_000, seed: int = DEFAULT_SEED,
                  n_users: int = 2_000, n_resources: int = 5_000, name: str | None = None,
                  target_share: float = 0.8) -> Scenario:
    """``n_rules`` ABAC permits over 50 actions x 20 types plus the 10 forbids.

    ``target_share`` of the requests target a random permit rule (a user of its department,
    a resource of its type, mostly owned by the user's tenant, mostly a risk under the
    rule's threshold); the rest are uniformly random. About half are allowed.
    """
    # The rules depend on (seed, n_rules); users/resources/requests on the seed only, so
    # M and L share their entity data.
    rng = random.Random(f"abac-rules/{seed}/{n_rules}")
    rules = []
    for i in range(n_rules):
        rules.append(Rule(
            id=f"p{i:05d}", effect="permit", actions=(rng.choice(ACTIONS),),
            types=(rng.choice(TYPES),), dept=rng.choice(DEPARTMENTS),
            risk_below=round(rng.uniform(0.50, 0.95), 2), owner_is_tenant=True))
    permits = list(rules)
    rules = rules + abac_forbids()

    erng = random.Random(f"abac-entities/{seed}")
    users = {f"agent-{i:05d}": {"dept": erng.choice(DEPARTMENTS), "tenant": erng.choice(TENANTS)}
             for i in range(n_users)}
    resources: dict[str, dict[str, dict]] = {t: {} for t in TYPES}
    for i in range(n_resources):
        t = erng.choice(TYPES)
        resources[t][f"{t}-{i:05d}"] = {"owner": erng.choice(TENANTS)}
    by_dept: dict[str, list[str]] = {}
    for uid, u in users.items():
        by_dept.setdefault(u["dept"], []).append(uid)
    by_type_owner: dict[tuple[str, str], list[str]] = {}
    for t, rs in resources.items():
        for rid, a in rs.items():
            by_type_owner.setdefault((t, a["owner"]), []).append(rid)
    res_ids = {t: list(v) for t, v in resources.items()}
    uids = list(users)

    qrng = random.Random(f"abac-requests/{seed}/{n_rules}/{n_requests}")
    reqs = []
    for _ in range(n_requests):
        if permits and qrng.random() < target_share:
            r = qrng.choice(permits)
            uid = qrng.choice(by_dept.get(r.dept) or uids)
            user = users[uid]
            action, rtype = r.actions[0], r.types[0]
            owned = by_type_owner.get((rtype, user["tenant"]))
            rid = qrng.choice(owned) if owned and qrng.random() < 0.75 else qrng.choice(res_ids[rtype])
            score = _risk(qrng, r.risk_below) if qrng.random() < 0.7 else _risk(qrng)
        else:
            uid, action, rtype = qrng.choice(uids), qrng.choice(ACTIONS), qrng.choice(TYPES)
            rid = qrng.choice(res_ids[rtype])
            score = _risk(qrng)
        reqs.append(_request(uid, users[uid], action, rtype, rid, resources[rtype][rid], score))
    ents = {PRINCIPAL_KIND: users, **resources}
    return Scenario(name or f"abac-{n_rules}", seed, tuple(rules), ents, reqs, ACTIONS, TYPES,
                    description=f"{n_rules} ABAC permits + 10 forbids; 50 actions x 20 types")


# --------------------------------------------------------------------------- named
def scenario_s(seed: int = DEFAULT_SEED, n_requests: int = 2_000) -> Scenario:
    return rbac_scenario(10, n_requests=n_requests, seed=seed, name="S")


def scenario_m(seed: int = DEFAULT_SEED, n_requests: int = 2_000) -> Scenario:
    return abac_scenario(1_000, n_requests=n_requests, seed=seed, name="M")


def scenario_l(seed: int = DEFAULT_SEED, n_requests: int = 2_000) -> Scenario:
    return abac_scenario(10_000, n_requests=n_requests, seed=seed, name="L")


def scenario(name: str, seed: int = DEFAULT_SEED, n_requests: int = 2_000) -> Scenario:
    """``scenario("S"|"M"|"L")``."""
    return {"S": scenario_s, "M": scenario_m, "L": scenario_l}[name.upper()](seed, n_requests)


def issue3_set(n_rules: int, seed: int = DEFAULT_SEED, n_requests: int = 2_000) -> Scenario:
    """The issue-3 sets (10, 1,000, 10,000 rules): the ABAC family (M is the 1,000 set)."""
    return abac_scenario(n_rules, n_requests=n_requests, seed=seed, name=f"issue3-{n_rules}")


def strip_attrs(requests: Iterable[dict]) -> list[dict]:
    """The same requests carrying ids only (attrs come from entity data, docs/language.md#entity-data)."""
    out = []
    for r in requests:
        r = dict(r)
        r["principal"] = {k: v for k, v in r["principal"].items() if k != "attrs"}
        r["resource"] = {k: v for k, v in r["resource"].items() if k != "attrs"}
        out.append(r)
    return out


# --------------------------------------------------------------------------- varied text
def varied_policy_text(n_rules: int = 10_000, seed: int = DEFAULT_SEED) -> str:
    """A large policy set using most of the language (for parse and check benchmarks).

    Constants, annotations, id globs, several actions and types per target, ``when`` and
    ``unless``, ``and``/``or``/``not``, ``in`` lists, ``matches``, ``has``, function calls,
    arithmetic, quantifiers, grants, approval gates and ``because``. No schema, so every
    rule checks cleanly (warnings only).
    """
    rng = random.Random(f"varied/{seed}/{n_rules}")
    out = [
        f"# generated: {n_rules} rules (seed {seed})",
        "const MAX_RISK = 0.7",
        'const PROD_ENVS = ["prod", "prod-eu", "prod-us"]',
        'const TRUSTED = ["engineering", "platform", "security"]',
        "option max_ttl = 2h",
        "",
    ]
    conds = [
        lambda: f'principal.dept == "{rng.choice(DEPARTMENTS)}"',
        lambda: f"risk.score < {round(rng.uniform(0.3, 0.95), 2)}",
        lambda: "risk.score < MAX_RISK",
        lambda: "resource.owner == principal.tenant",
        lambda: "principal.dept in TRUSTED",
        lambda: 'resource.env in PROD_ENVS',
        lambda: f'resource.id matches "{rng.choice(TENANTS)}/**"',
        lambda: "principal has clearance and principal.clearance >= 3",
        lambda: 'in_cidr(context.ip, "10.0.0.0/8")',
        lambda: f"len(delegation.chain) <= {rng.randint(1, 4)}",
        lambda: 'delegation.root.kind == "human"',
        lambda: 'any s in risk.signals: s == "new_device"',
        lambda: f'lower(principal.team) == "{rng.choice(DEPARTMENTS)}"',
        lambda: "(context.hour >= 8 and context.hour < 18) or principal.on_call",
        lambda: f"resource.size * 2 + 1 < {rng.randint(100, 10_000)}",
        lambda: 'not (resource.visibility == "private")',
        lambda: f'starts_with(resource.id, "{rng.choice(TENANTS)}")',
    ]
    kinds = ["agent", "human", "service"]
    for i in range(n_rules):
        lines = [f'@id("rule-{i:05d}")']
        if rng.random() < 0.3:
            lines.append(f'@tag("owasp-agentic:A{rng.randint(1, 10):02d}")')
        roll = rng.random()
        head = "permit" if roll < 0.75 else "forbid" if roll < 0.92 else "require approval for"
        subj = "*" if rng.random() < 0.3 else (
            rng.choice(kinds) + (f' "spiffe://{rng.choice(TENANTS)}.io/agents/*"' if rng.random() < 0.3 else ""))
        acts = ", ".join(rng.sample(ACTIONS, rng.randint(1, 3)))
        ress = ", ".join(rng.sample(TYPES, rng.randint(1, 2)))
        lines.append(f"{head} {subj} to {acts} on {ress}")
        for _ in range(rng.randint(1, 3)):
            kw = "when" if rng.random() < 0.85 else "unless"
            lines.append(f"  {kw} {rng.choice(conds)()}")
        if head == "permit" and rng.random() < 0.4:
            lines.append(f'  grant "{rng.choice(TYPES)}:read:" + resource.id for {rng.choice(["10m", "30m", "1h"])}')
        if head == "require approval for":
            lines.append('  by "sre-oncall", "release-managers"')
        lines.append(f'  because "generated rule {i} for {rng.choice(DEPARTMENTS)}"')
        out.append("\n".join(lines))
        out.append("")
    return "\n".join(out)
