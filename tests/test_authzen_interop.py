"""The public OpenID AuthZEN interop vectors (openid/authzen, interop/, commit e287920;
copied into tests/data/authzen/, sources in its README.md), each scenario served by a
policy set written from the scenario's text, and compared the way the upstream runners
compare:

* Todo and API gateway (``interop/authzen-todo-backend/test/runner.ts``,
  ``interop/authzen-api-gateways/test-harness/test/runner.ts``): a single evaluation
  passes when ``data.decision || false`` equals ``expected``; a batch when
  ``JSON.stringify(data.evaluations)`` equals ``JSON.stringify(expected)``: the whole
  array, exactly, with nothing but ``decision`` in each item;
* Search and IdP (``interop/authzen-search-demo/test-harness/src/runner.ts``,
  ``interop/authzen-idp/test-harness/src/runner.ts``): ``results`` sorted by type then
  id (or by name), ``null`` members dropped, then compared exactly; we also follow
  ``page.next_token`` with a small ``page.limit`` and compare the union of the pages.

Every request is sent as the runners send it: the vector's body, nothing added.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx client works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from policylang.server import ServiceConfig, create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "authzen"
TODO_POLICIES = ROOT / "examples" / "authzen-todo" / "policies"


def _load(*parts: str) -> dict:
    return json.loads(DATA.joinpath(*parts).read_text())


def _client(path: Path):
    app = create_app(ServiceConfig(path=str(path)), watch=False)
    return TestClient(app)


# ----------------------------------------------------------------- the runners' comparisons

def _stringify(value) -> str:
    """JavaScript's ``JSON.stringify`` of a parsed JSON value (key order kept, no spaces)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def single_passes(data: dict, expected: bool) -> bool:
    """runner.ts: ``RSP = data.decision || false``; PASS iff the stringified forms are equal."""
    rsp = data.get("decision") or False
    return _stringify(expected) == _stringify(rsp)


def batch_passes(data: dict, expected: list) -> bool:
    """runner.ts: ``RSP = data.evaluations || []``; PASS iff the stringified forms are equal."""
    return _stringify(expected) == _stringify(data.get("evaluations") or [])


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _sorted_results(items: list) -> list:
    def key(item):
        if item.get("type"):
            return (0, item["type"], item["id"])
        return (1, item["name"], "")
    return sorted(items, key=key)


def search_passes(results: list, expected: dict) -> bool:
    """search runner.ts ``status``: both sorted (type, then id; or name), nulls dropped,
    then stringified and compared. (The IdP runner also sorts the keys; our results have
    their keys in the expected order already, and ``_stringify`` keeps the order.)"""
    return (_stringify(_drop_nulls(_sorted_results(results)))
            == _stringify(_drop_nulls(_sorted_results(expected.get("results") or []))))


def _search_all_pages(client, what: str, request: dict, limit: int) -> list:
    """The results of a search, following ``page.next_token`` with ``page.limit``."""
    out: list = []
    token = None
    for _ in range(1000):
        body = {**request, "page": {"limit": limit, **({"token": token} if token else {})}}
        r = client.post(f"/access/v1/search/{what}", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert len(data["results"]) <= limit
        out.extend(data["results"])
        token = data["page"]["next_token"]
        if not token:
            return out
    raise AssertionError("the search never ended")


def test_the_comparisons_are_the_runners():
    # a runner passes the exact array and nothing else
    assert batch_passes({"evaluations": [{"decision": True}, {"decision": False}]},
                        [{"decision": True}, {"decision": False}])
    assert not batch_passes({"evaluations": [{"decision": True, "context": {}}]}, [{"decision": True}])
    assert not batch_passes({"evaluations": [{"decision": True}]}, [{"decision": True}, {"decision": True}])
    assert single_passes({"decision": False, "context": {"x": 1}}, False)
    assert single_passes({}, False) and not single_passes({"error": "x"}, True)
    assert search_passes([{"type": "record", "id": "2"}, {"type": "record", "id": "1"}],
                         {"results": [{"type": "record", "id": "1"}, {"type": "record", "id": "2"}]})
    assert not search_passes([{"type": "record", "id": "1", "extra": 1}], {"results": [{"type": "record", "id": "1"}]})
    assert not search_passes([], {"results": [{"name": "view"}]})


# ---------------------------------------------------------------------------------- Todo

TODO_FILES = {"00": ("todo", "decisions-authorization-api-1_0-00.json"),
              "01": ("todo-decisions-authorization-api-1_0-01.json",),
              "02": ("todo-decisions-authorization-api-1_0-02.json",)}
TODO_SINGLE = [(f"{v}#{i}", c) for v, f in TODO_FILES.items() for i, c in enumerate(_load(*f).get("evaluation", []))]
TODO_BATCH = [(f"{v}#batch{i}", c) for v, f in TODO_FILES.items()
              for i, c in enumerate(_load(*f).get("evaluations", []))]


@pytest.fixture(scope="module")
def todo():
    with _client(TODO_POLICIES) as c:
        yield c


def test_todo_vector_counts():
    assert len(TODO_SINGLE) == 120 and len(TODO_BATCH) == 3
    # draft 00 puts the attributes beside type/id, where 1.0-01 has properties
    draft0 = _load(*TODO_FILES["00"])["evaluation"]
    assert any("ownerID" in c["request"]["resource"] for c in draft0)
    assert not any("properties" in c["request"]["resource"] for c in draft0)


@pytest.mark.parametrize("case", [c for _n, c in TODO_SINGLE], ids=[n for n, _c in TODO_SINGLE])
def test_todo_single(todo, case):
    r = todo.post("/access/v1/evaluation", json=case["request"])
    assert r.status_code == 200, r.text
    assert single_passes(r.json(), case["expected"]), r.text


@pytest.mark.parametrize("case", [c for _n, c in TODO_BATCH], ids=[n for n, _c in TODO_BATCH])
def test_todo_batch_exactly(todo, case):
    r = todo.post("/access/v1/evaluations", json=case["request"])
    assert r.status_code == 200, r.text
    assert batch_passes(r.json(), case["expected"]), r.text


# --------------------------------------------------------------------------- API gateway

GATEWAY = _load("api-gateway", "decisions.json")["evaluation"]


@pytest.fixture(scope="module")
def gateway():
    with _client(DATA / "api-gateway" / "policies") as c:
        yield c


def test_gateway_vector_count():
    assert len(GATEWAY) == 25 and not _load("api-gateway", "decisions.json").get("evaluations")


@pytest.mark.parametrize("case", GATEWAY, ids=[f"#{i}" for i in range(len(GATEWAY))])
def test_gateway(gateway, case):
    r = gateway.post("/access/v1/evaluation", json=case["request"])
    assert r.status_code == 200, r.text
    assert single_passes(r.json(), case["expected"]), r.text


def test_gateway_entity_data_is_the_scenario_pip():
    # the five PIDs of the scenario text, with the roles it lists
    stored = json.loads((DATA / "api-gateway" / "policies" / "gateway.entities.json").read_text())["identity"]
    pids = {c["request"]["subject"]["id"] for c in GATEWAY}
    assert set(stored) == pids
    assert sorted(u["email"] for u in stored.values() if "editor" in u["roles"]) == [
        "morty@the-citadel.com", "summer@the-smiths.com"]


# -------------------------------------------------------------------------------- Search

SEARCH = [(what, f"{what}#{i}", c) for what in ("subject", "resource", "action")
          for i, c in enumerate(_load("search", f"{what}-results.json")["evaluation"])]


@pytest.fixture(scope="module")
def search():
    with _client(DATA / "search" / "policies") as c:
        yield c


def test_search_vector_counts_and_data():
    assert [sum(1 for w, _n, _c in SEARCH if w == what) for what in ("subject", "resource", "action")] == [60, 18, 120]
    # the entity data is the scenario's users.json and records.json
    stored = json.loads((DATA / "search" / "policies" / "search.entities.json").read_text())
    users = _load("search", "users.json")
    records = _load("search", "records.json")
    assert stored["user"] == {u["id"]: {"role": u["role"], "department": u["department"]} for u in users}
    assert stored["record"] == {str(r["id"]): {k: r[k] for k in ("title", "department", "owner")} for r in records}


@pytest.mark.parametrize("what,case", [(w, c) for w, _n, c in SEARCH], ids=[n for _w, n, _c in SEARCH])
def test_search(search, what, case):
    r = search.post(f"/access/v1/search/{what}", json=case["request"])
    assert r.status_code == 200, r.text
    data = r.json()
    assert search_passes(data["results"], case["expected"]), r.text
    assert data["page"]["next_token"] == ""  # every answer fits the default page
    # and page by page, the same set, each item once
    paged = _search_all_pages(search, what, case["request"], limit=2)
    assert len(paged) == len({_stringify(x) for x in paged})
    assert search_passes(paged, case["expected"])


# ----------------------------------------------------------------------------------- IdP

IDP = _load("idp", "results.json")["search"]


@pytest.fixture(scope="module")
def idp():
    with _client(DATA / "idp" / "policies") as c:
        yield c


def test_idp_vector_count_and_data():
    assert len(IDP) == 6
    stored = json.loads((DATA / "idp" / "policies" / "idp.entities.json").read_text())
    assert stored["record"] == {r["id"]: {"owner": r["owner"]} for r in _load("idp", "records.json")}


@pytest.mark.parametrize("case", IDP, ids=[c["request"]["subject"]["id"] for c in IDP])
def test_idp(idp, case):
    r = idp.post("/access/v1/search/resource", json=case["request"])
    assert r.status_code == 200, r.text
    assert search_passes(r.json()["results"], case["expected"]), r.text
    paged = _search_all_pages(idp, "resource", case["request"], limit=1)
    assert search_passes(paged, case["expected"])


def test_idp_search_policy_agrees_with_the_search_scenario(idp, search):
    # the IdP scenario reuses the Search policy for delete: both sets give the same records
    for case in IDP:
        a = idp.post("/access/v1/search/resource", json=case["request"]).json()["results"]
        b = search.post("/access/v1/search/resource", json=case["request"]).json()["results"]
        assert _sorted_results(a) == _sorted_results(b)
