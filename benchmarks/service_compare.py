"""policylang serve against the Cerbos PDP, as services: the same decisions over HTTP,
the same load generator, the same cores.

    python -m benchmarks.service_compare --seconds 10 --cores 1,2
    python -m benchmarks.service_compare --seconds 5 --cores 1 --json /tmp/service.json

Both servers get scenario M (benchmarks/scenarios.py: 1,000 ABAC permits and 10 forbids
over 50 actions and 20 resource types):

* **policylang**: ``policylang serve`` (uvicorn with httptools and uvloop, one worker
  per core, no access log) over the scenario's policy text, attributes inline in each
  request; ``POST /access/v1/evaluation`` for a single check and
  ``POST /access/v1/evaluations`` with 100 items for a batch (the service's default
  answers: a single decision with its context, batch items without).
* **Cerbos** (npm ``@cerbos/cerbos-linux-x64``, installed into a cache directory with
  ``npm install --prefix``): the same rules as one resource policy per type, one rule per
  permit (``EFFECT_ALLOW``, roles ``*``, a CEL condition on ``P.attr`` and
  ``R.attr``) and the forbids as ``EFFECT_DENY`` rules (deny wins, no match denies, as in
  policylang); ``POST /api/check/resources`` with one resource, or with 100.

The risk score, which policylang takes from ``context.risk.score``, is a resource
attribute for Cerbos (``R.attr.risk``: Cerbos has no request context, and a batch has one
principal but a score per item). A batch is 100 consecutive requests of the M stream
with the principal of its first request (one subject per AuthZEN batch, one principal per
Cerbos check): its expected answers are computed for that principal.

Before anything is timed every prepared body is sent once to each server with an
ordinary HTTP client and every decision is compared with :meth:`Scenario.expected`; one
wrong answer stops the run. During the timed runs wrk counts every non-2xx answer as an
error, and a run with errors fails too.

Pinning (Linux ``taskset``): with 1 core the server runs on cpu 0 and wrk on cpu 1; with
2 cores the server gets cpus 0-1 and wrk runs on the same two cores (it shares them:
said so in the table). policylang runs one uvicorn worker per core; Cerbos (Go) uses the
cores it is given. Both servers are up at once; each stream (single checks over 32
connections, batches over 8, single checks over one connection: ``wrk -c1 -t1``) runs
on one server then the other, ``repeats`` times in alternating order, each run after a
warm-up, and the median run is reported (every sample is in the JSON), so that both see
the same machine. Decisions/s is requests/s times the decisions per request; the
server's CPU time per decision (``/proc``, the server and its workers) is reported too,
as it is what a busy machine inflates least. A full run takes about
``len(cores) * 3 streams * 2 servers * repeats * (seconds + warm-up)``.

``measure(seconds, cores) -> dict`` and ``markdown(result) -> str`` are what
``benchmarks/compare.py`` calls; ``main()`` is the CLI. Without wrk, npm/the Cerbos
package, or taskset, they say so and measure nothing (``result["skipped"]``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

try:
    from . import scenarios as sc
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import scenarios as sc

ROOT = Path(__file__).resolve().parent.parent
CERBOS_PACKAGE = "@cerbos/cerbos-linux-x64"
#: where the Cerbos binary is installed (npm --prefix); POLICYLANG_BENCH_CACHE overrides
CACHE = Path(os.environ.get("POLICYLANG_BENCH_CACHE") or Path.home() / ".cache" / "policylang-bench")
BATCH = 100
N_SINGLE = 2_000      # single-check bodies (the M stream), cycled by wrk
N_BATCHES = 20        # batch bodies of BATCH items each
CONNECTIONS = 32
BATCH_CONNECTIONS = 8

__all__ = ["cerbos_binary", "cerbos_policies", "main", "markdown", "measure", "run_wrk", "streams"]


# ------------------------------------------------------------------------------ wrk

WRK_SCRIPT = r"""
local bodies = {%s}
local method, path = "%s", "%s"
local i = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  i = i %% #bodies + 1
  if method == "GET" then return wrk.format("GET", path) end
  return wrk.format(method, path, headers, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\nRESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, "errors": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_wrk(port: int, method: str, path: str, bodies: list[str], duration: float, connections: int,
            threads: int = 1, cpus: list[int] | None = None) -> dict:
    """One wrk run cycling through ``bodies``; ``cpus``: pin wrk there (taskset). Returns
    requests, rps, p50/p90/p99/max in ms and errors (connect, read, write, timeouts and
    non-2xx answers)."""
    for b in bodies:
        if "]==]" in b:
            raise ValueError("a body holds the Lua string delimiter ]==]")
    lua = ", ".join("[==[" + b + "]==]" for b in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (lua, method, path))
        script = f.name
    cmd = ["wrk", f"-t{threads}", f"-c{max(connections, threads)}", f"-d{max(1, round(duration))}s",
           "--timeout", "10s", "-s", script, f"http://127.0.0.1:{port}{path}"]
    if cpus:
        cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=duration + 60)
    finally:
        os.unlink(script)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT "):])
    seconds = r["duration_us"] / 1e6
    return {"requests": r["requests"], "seconds": seconds, "rps": r["requests"] / seconds,
            "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "max_ms": r["max_us"] / 1000, "errors": r["errors"]}


# --------------------------------------------------------------------------- the streams

def _authzen_item(req: dict) -> dict:
    return {"action": {"name": req["action"]},
            "resource": {"type": req["resource"]["type"], "id": req["resource"]["id"],
                         "properties": req["resource"]["attrs"]},
            "context": {"risk": {"score": req["risk"]["score"]}}}


def _subject(req: dict) -> dict:
    p = req["principal"]
    return {"type": p["kind"], "id": p["id"], "properties": p["attrs"]}


def _cerbos_principal(req: dict) -> dict:
    p = req["principal"]
    return {"id": p["id"], "roles": [p["kind"]], "attr": p["attrs"]}


def _cerbos_resource(req: dict) -> dict:
    r = req["resource"]
    return {"actions": [req["action"]],
            "resource": {"kind": r["type"], "id": r["id"], "attr": {**r["attrs"], "risk": req["risk"]["score"]}}}


def streams(scn: sc.Scenario) -> dict:
    """The prepared bodies and their expected answers: ``{"single": {"requests": [...],
    "expected": [...]}, "batch": {...}}`` where each batch's expected is a list of 100."""
    singles = scn.requests[:N_SINGLE]
    batches = []
    reqs = scn.requests
    for k in range(N_BATCHES):
        chunk = [reqs[(k * BATCH + i) % len(reqs)] for i in range(BATCH)]
        principal = chunk[0]["principal"]
        batches.append([{**r, "principal": principal} for r in chunk])
    return {
        "single": {"requests": singles, "expected": [scn.expected(r) == "allow" for r in singles]},
        "batch": {"requests": batches, "expected": [[scn.expected(r) == "allow" for r in b] for b in batches]},
    }


def policylang_bodies(st: dict) -> dict:
    single = [json.dumps({"subject": _subject(r), **_authzen_item(r)}) for r in st["single"]["requests"]]
    batch = [json.dumps({"subject": _subject(b[0]), "evaluations": [_authzen_item(r) for r in b]})
             for b in st["batch"]["requests"]]
    return {"single": ("/access/v1/evaluation", single), "batch": ("/access/v1/evaluations", batch)}


def cerbos_bodies(st: dict) -> dict:
    single = [json.dumps({"requestId": f"s{i}", "principal": _cerbos_principal(r),
                          "resources": [_cerbos_resource(r)]}) for i, r in enumerate(st["single"]["requests"])]
    batch = [json.dumps({"requestId": f"b{i}", "principal": _cerbos_principal(b[0]),
                         "resources": [_cerbos_resource(r) for r in b]}) for i, b in enumerate(st["batch"]["requests"])]
    return {"single": ("/api/check/resources", single), "batch": ("/api/check/resources", batch)}


def _policylang_decisions(kind: str, answer: dict) -> list[bool]:
    if kind == "single":
        return [answer["decision"]]
    return [e["decision"] for e in answer["evaluations"]]


def _cerbos_decisions(kind: str, answer: dict, body: dict) -> list[bool]:
    out = []
    results = answer["results"]
    if len(results) != len(body["resources"]):
        raise AssertionError(f"Cerbos answered {len(results)} results for {len(body['resources'])} resources")
    for res, asked in zip(results, body["resources"]):
        if res["resource"]["id"] != asked["resource"]["id"]:
            raise AssertionError(f"Cerbos answered {res['resource']['id']} for {asked['resource']['id']}")
        effect = res["actions"][asked["actions"][0]]
        out.append(effect == "EFFECT_ALLOW")
    return out


# ------------------------------------------------------------------------- Cerbos policy

def _cel_num(x: float) -> str:
    s = repr(float(x))
    return s if "." in s or "e" in s else s + ".0"


def _cel_condition(rule: sc.Rule) -> str | None:
    conds = []
    if rule.role is not None:
        conds.append(f"P.attr.role == {json.dumps(rule.role)}")
    if rule.dept is not None:
        conds.append(f"P.attr.dept == {json.dumps(rule.dept)}")
    if rule.risk_below is not None:
        conds.append(f"R.attr.risk < {_cel_num(rule.risk_below)}")
    if rule.risk_above is not None:
        conds.append(f"R.attr.risk > {_cel_num(rule.risk_above)}")
    if rule.owner_is_tenant:
        conds.append("R.attr.owner == P.attr.tenant")
    return " && ".join(conds) or None


def cerbos_policies(scn: sc.Scenario) -> dict[str, dict]:
    """One Cerbos resource policy per resource type (``{type: policy document}``): each
    rule of the scenario that can apply to the type becomes a rule (permit:
    ``EFFECT_ALLOW``, forbid: ``EFFECT_DENY``; any action: ``*``)."""
    out = {}
    for t in scn.types:
        rules = []
        for r in scn.rules:
            if r.types is not None and t not in r.types:
                continue
            rule = {"name": r.id, "actions": list(r.actions) if r.actions is not None else ["*"],
                    "effect": "EFFECT_ALLOW" if r.effect == "permit" else "EFFECT_DENY", "roles": ["*"]}
            cond = _cel_condition(r)
            if cond:
                rule["condition"] = {"match": {"expr": cond}}
            rules.append(rule)
        out[t] = {"apiVersion": "api.cerbos.dev/v1",
                  "resourcePolicy": {"version": "default", "resource": t, "rules": rules}}
    return out


def cerbos_binary(install: bool = True) -> tuple[str | None, str]:
    """(path of the Cerbos binary, how it was found), or (None, why not). Installs the npm
    package into :data:`CACHE` when it is not there yet and ``install``."""
    prefix = CACHE / "cerbos"
    binary = prefix / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"
    if binary.is_file():
        return str(binary), f"{CERBOS_PACKAGE} in {prefix}"
    if not sys.platform.startswith("linux") or os.uname().machine not in ("x86_64", "amd64"):
        return None, f"{CERBOS_PACKAGE} is for linux-x64 only"
    npm = shutil.which("npm")
    if npm is None or not install:
        return None, f"npm is not installed (needed for {CERBOS_PACKAGE})"
    prefix.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", CERBOS_PACKAGE],
                       check=False, capture_output=True, text=True, timeout=600)
    if p.returncode != 0 or not binary.is_file():
        return None, f"npm install {CERBOS_PACKAGE} failed: {(p.stderr or p.stdout).strip()[-300:]}"
    return str(binary), f"{CERBOS_PACKAGE} installed into {prefix}"


def cerbos_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], check=False, capture_output=True, text=True,
                              timeout=30).stdout.split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


# -------------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(proc: subprocess.Popen, url: str, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{err[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:g} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _pin(cpus: list[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus))]


def start_policylang(policy_dir: Path, port: int, cpus: list[int], cache_size: int | None = None
                     ) -> subprocess.Popen:
    cmd = [*_pin(cpus), sys.executable, "-c", "from policylang.cli import main; main()", "serve", str(policy_dir),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(len(cpus)), "--poll-interval", "0",
           "--log-level", "warning", "--no-access-log", "--max-body", str(4 << 20)]
    if cache_size is not None:
        cmd += ["--cache-size", str(cache_size)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_http(proc, f"http://127.0.0.1:{port}/healthz", "policylang serve")
    time.sleep(0.3 * len(cpus))  # every worker up
    return proc


def start_cerbos(binary: str, policy_dir: Path, port: int, cpus: list[int]) -> subprocess.Popen:
    grpc = free_port()
    cmd = [*_pin(cpus), binary, "server", "--log-level=error",
           "--set=storage.driver=disk", f"--set=storage.disk.directory={policy_dir}",
           "--set=storage.disk.watchForChanges=false",
           # Cerbos answers at most 50 resources per request unless told otherwise
           f"--set=server.requestLimits.maxResourcesPerRequest={BATCH}",
           f"--set=server.httpListenAddr=127.0.0.1:{port}", f"--set=server.grpcListenAddr=127.0.0.1:{grpc}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERBOS_")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _wait_http(proc, f"http://127.0.0.1:{port}/_cerbos/health", "cerbos server")
    return proc


def _post(port: int, path: str, body: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{path}: HTTP {e.code}: {e.read()[:500]!r}") from None


def verify(name: str, port: int, bodies: dict, st: dict) -> int:
    """Send every prepared body once; every decision must be the expected one. Returns
    the number of decisions checked; raises AssertionError on the first wrong one."""
    checked = 0
    for kind in ("single", "batch"):
        path, texts = bodies[kind]
        for i, text in enumerate(texts):
            answer = _post(port, path, text)
            want = [st[kind]["expected"][i]] if kind == "single" else st[kind]["expected"][i]
            if name == "cerbos":
                got = _cerbos_decisions(kind, answer, json.loads(text))
            else:
                got = _policylang_decisions(kind, answer)
            if got != want:
                bad = next(j for j, (g, w) in enumerate(zip(got, want)) if g != w) if len(got) == len(want) else -1
                raise AssertionError(f"{name} {kind} body {i}: decision {bad} is "
                                     f"{got[bad] if bad >= 0 else got!r}, expected {want[bad] if bad >= 0 else want!r}")
            checked += len(want)
    return checked


# ------------------------------------------------------------------------ CPU accounting

def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server and its workers so far (Linux /proc), or NaN.
    CPU time per request does not depend on what else the machine is doing, so it says
    what the service costs even on a busy machine."""
    if not os.path.isdir("/proc"):
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total / tick


# -------------------------------------------------------------------------------- measure

def _skip(reason: str) -> dict:
    return {"skipped": reason}


def _missing_tools() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the service comparison runs on Linux only (taskset)"
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {'wrk' if tool == 'wrk' else 'util-linux'})"
    return None


def _layout(n: int) -> tuple[list[int], list[int], str]:
    """(server cpus, wrk cpus, note) for ``n`` cores."""
    available = sorted(os.sched_getaffinity(0))
    if n > len(available):
        raise ValueError(f"{n} cores asked, {len(available)} available")
    server = available[:n]
    rest = available[n:]
    if rest:
        return server, rest[:1], f"server on cpu {','.join(map(str, server))}, wrk on cpu {rest[0]}"
    return server, server, f"server on cpus {','.join(map(str, server))}, wrk shares them"


#: (stream, body kind, connections, decisions per request)
PLAN = (("single", "single", CONNECTIONS, 1), ("batch", "batch", BATCH_CONNECTIONS, BATCH),
        ("single_c1", "single", 1, 1))


def _one_run(port: int, pid: int, bodies: dict, kind: str, conns: int, per: int, seconds: float,
             wrk_cpus: list[int], warmup: float) -> dict:
    path, texts = bodies[kind]
    if warmup > 0:
        run_wrk(port, "POST", path, texts, warmup, conns, cpus=wrk_cpus)
    load0, cpu0 = os.getloadavg()[0], server_cpu_seconds(pid)
    r = run_wrk(port, "POST", path, texts, seconds, conns, cpus=wrk_cpus)
    cpu = server_cpu_seconds(pid) - cpu0
    if r["errors"]:
        raise AssertionError(f"{kind} on port {port}: {r['errors']} wrk errors (non-2xx answers or socket errors)")
    # the server's own CPU time per decision: what a busy machine inflates least
    r["server_cpu_us_per_decision"] = cpu / (r["requests"] * per) * 1e6 if r["requests"] else float("nan")
    r["connections"] = conns
    r["decisions_per_request"] = per
    r["decisions_per_s"] = r["rps"] * per
    r["loadavg"] = round(max(load0, os.getloadavg()[0]), 2)
    return r


def _median_run(samples: list[dict]) -> dict:
    """The sample of median decisions/s, with every sample's figures kept."""
    ordered = sorted(samples, key=lambda r: r["decisions_per_s"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["samples"] = [{k: r[k] for k in ("decisions_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_decision",
                                         "loadavg")} for r in samples]
    return out


def _run_streams(servers: dict, seconds: float, wrk_cpus: list[int], warmup: float, repeats: int) -> dict:
    """Each stream on each server, back to back (policylang then Cerbos, then the other
    way round, ``repeats`` times), so that both see the same machine; per server and
    stream the median run."""
    out: dict = {name: {} for name in servers}
    names = list(servers)
    for stream, kind, conns, per in PLAN:
        samples: dict = {name: [] for name in names}
        for rep in range(repeats):
            for name in (names if rep % 2 == 0 else names[::-1]):
                port, pid, bodies = servers[name]
                samples[name].append(_one_run(port, pid, bodies, kind, conns, per, seconds, wrk_cpus, warmup))
        for name in names:
            out[name][stream] = _median_run(samples[name])
    return out


#: the third server: policylang with its decision and answer caches off (every request decided)
UNCACHED = "policylang (cache off)"


def measure(seconds: float, cores: list[int], *, warmup: float | None = None, scenario: str = "M",
            policylang_cache_size: int | None = None, repeats: int = 3, uncached: bool = True) -> dict:
    """Measure both services on each core count of ``cores`` (e.g. ``[1, 2]``) for
    ``seconds`` per run, ``repeats`` runs per stream and server (alternating servers).
    The result holds, per core count, per server, the three streams (``single``,
    ``batch``, ``single_c1``: the median run, with every sample) with rps, decisions/s,
    p50/p99 ms, the server's CPU µs per decision, and the ratios policylang / Cerbos;
    ``{"skipped": why}`` when a tool is missing. ``uncached``: also run policylang with
    ``--cache-size 0`` (:data:`UNCACHED`, ratios under ``ratio_uncached``): the stream
    cycles through 2,000 bodies, so with the default cache every timed request is a
    repeat the service has answered before (its decision and answer caches,
    docs/server.md#answer-cache), and that row shows what deciding every one costs."""
    why = _missing_tools()
    if why:
        return _skip(why)
    binary, how = cerbos_binary()
    if binary is None:
        return _skip(how)
    warmup = min(2.0, max(0.5, seconds / 5)) if warmup is None else warmup
    scn = sc.scenario(scenario)
    st = streams(scn)
    pl_bodies, cb_bodies = policylang_bodies(st), cerbos_bodies(st)
    result: dict = {"scenario": scenario, "seconds": seconds, "repeats": repeats, "cerbos": cerbos_version(binary),
                    "cerbos_from": how, "policylang_cache_size": policylang_cache_size,
                    "cpus": os.cpu_count(), "runs": {}, "verified": {}}
    try:
        import policylang
        result["policylang"] = getattr(policylang, "__version__", "?")
    except ImportError:  # pragma: no cover
        result["policylang"] = "?"
    with tempfile.TemporaryDirectory(prefix="service-compare-") as tmp:
        pdir, cdir = Path(tmp) / "policylang", Path(tmp) / "cerbos"
        pdir.mkdir()
        cdir.mkdir()
        (pdir / f"scenario-{scenario}.policy").write_text(scn.text)
        for t, doc in cerbos_policies(scn).items():
            (cdir / f"{t}.json").write_text(json.dumps(doc, indent=1))
        for n in cores:
            server_cpus, wrk_cpus, note = _layout(n)
            run: dict = {"layout": note}
            procs: dict = {}
            try:
                servers = {}
                for name in ("policylang", *((UNCACHED,) if uncached else ()), "cerbos"):
                    port = free_port()
                    if name == "policylang":
                        procs[name] = start_policylang(pdir, port, server_cpus, policylang_cache_size)
                    elif name == UNCACHED:
                        procs[name] = start_policylang(pdir, port, server_cpus, 0)
                    else:
                        procs[name] = start_cerbos(binary, cdir, port, server_cpus)
                    bodies = cb_bodies if name == "cerbos" else pl_bodies
                    result["verified"][name] = verify(name, port, bodies, st)
                    servers[name] = (port, procs[name].pid, bodies)
                run.update(_run_streams(servers, seconds, wrk_cpus, warmup, repeats))
            finally:
                for proc in procs.values():
                    stop(proc)
            run["ratio"] = {k: run["policylang"][k]["decisions_per_s"] / run["cerbos"][k]["decisions_per_s"]
                            for k in ("single", "batch")}
            run["ratio"]["p50_c1"] = run["cerbos"]["single_c1"]["p50_ms"] / run["policylang"]["single_c1"]["p50_ms"]
            for k in ("single", "batch"):  # Cerbos's server CPU per decision over policylang's
                run["ratio"][k + "_cpu"] = (run["cerbos"][k]["server_cpu_us_per_decision"]
                                            / run["policylang"][k]["server_cpu_us_per_decision"])
            if UNCACHED in run:
                run["ratio_uncached"] = {k: run[UNCACHED][k]["decisions_per_s"] / run["cerbos"][k]["decisions_per_s"]
                                         for k in ("single", "batch")}
            result["runs"][str(n)] = run
    return result


def markdown(result: dict) -> str:
    """The result as a markdown table (or the reason it was skipped)."""
    if "skipped" in result:
        return f"Service comparison skipped: {result['skipped']}.\n"
    verified = ", ".join(f"{k}: {v:,}" for k, v in result["verified"].items())
    lines = [(f"Scenario {result['scenario']}, policylang {result.get('policylang', '?')} (`policylang serve`, "
              f"uvicorn/httptools/uvloop, one worker per core) against Cerbos {result['cerbos']} "
              f"(`cerbos server`, disk store), the same wrk on the same cores; {result.get('repeats', 1)} runs of "
              f"{result['seconds']:g} s per stream and server, alternating between the servers, the median run "
              f"shown; every decision checked before timing ({verified})"
              + (f"; policylang --cache-size {result['policylang_cache_size']}"
                 if result.get("policylang_cache_size") is not None else "") + "."), "",
             ("| cores | server | single: decisions/s | p50 ms | p99 ms | CPU µs/decision | batch of 100: "
              "decisions/s | p50 ms | p99 ms | CPU µs/decision | 1 connection: p50 ms | p99 ms | load |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, run in result["runs"].items():
        for name in ("policylang", UNCACHED, "cerbos"):
            if name not in run:
                continue
            s, b, c = run[name]["single"], run[name]["batch"], run[name]["single_c1"]
            load = max(s["loadavg"], b["loadavg"], c["loadavg"])
            lines.append(f"| {n} ({run['layout']}) | {name} | {s['decisions_per_s']:,.0f} | {s['p50_ms']:.3f} | "
                         f"{s['p99_ms']:.3f} | {s['server_cpu_us_per_decision']:.1f} | {b['decisions_per_s']:,.0f} | "
                         f"{b['p50_ms']:.2f} | {b['p99_ms']:.2f} | {b['server_cpu_us_per_decision']:.2f} | "
                         f"{c['p50_ms']:.3f} | {c['p99_ms']:.3f} | {load:.1f} |")
        r = run["ratio"]
        lines.append(f"| {n} | **policylang ÷ Cerbos** | **{r['single']:.2f}×** | | | {r['single_cpu']:.2f}× less | "
                     f"**{r['batch']:.2f}×** | | | {r['batch_cpu']:.2f}× less | Cerbos p50 ÷ policylang p50: "
                     f"{r['p50_c1']:.2f} | | |")
        u = run.get("ratio_uncached")
        if u:
            lines.append(f"| {n} | **{UNCACHED} ÷ Cerbos** | **{u['single']:.2f}×** | | | | **{u['batch']:.2f}×** "
                         "| | | | | | |")
    lines += ["", (f"Single checks over {CONNECTIONS} connections, batches over {BATCH_CONNECTIONS}, '1 connection' "
                   "is `wrk -c1 -t1`; decisions/s is requests/s × decisions per request. CPU µs/decision is the "
                   "server's own user+system time over the run divided by the decisions answered (a busy machine "
                   "inflates it least). 'load' is the 1-minute load average during the runs. The stream cycles "
                   f"through {N_SINGLE:,} single bodies and {N_BATCHES} batches, so with policylang's default cache "
                   "every timed request repeats one answered before (decision and answer caches, "
                   f"docs/server.md#answer-cache); '{UNCACHED}' is `--cache-size 0`: every request decided.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="seconds per stream (default 10)")
    ap.add_argument("--cores", default="1,2", help="core counts, comma-separated (default 1,2)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per stream")
    ap.add_argument("--cache-size", type=int, default=None,
                    help="policylang serve --cache-size (default: the server's default; 0: no decision cache)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per stream and server, alternating (default 3)")
    ap.add_argument("--json", help="write the result here as JSON")
    args = ap.parse_args(argv)
    cores = [int(c) for c in args.cores.split(",") if c.strip()]
    result = measure(args.seconds, cores, warmup=args.warmup, policylang_cache_size=args.cache_size,
                     repeats=max(1, args.repeats))
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
