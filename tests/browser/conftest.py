"""Browser tests: a playground on loopback, driven by Playwright through Debian's Chromium.

Fixtures (shared with the audit viewer's browser tests):

- ``serve_playground(path, audit=None, allow_write=False, **create_app_kwargs)``: starts
  ``policylang.playground.app.create_app`` with uvicorn on 127.0.0.1 on a free port, in a
  thread, and returns its base URL (``http://127.0.0.1:PORT/``); stopped after the test.
- ``browser``: one headless Chromium per session (``/usr/bin/chromium``, or
  ``$PLAYWRIGHT_CHROMIUM``); ``browser_page``: a fresh page per test that fails the test on
  an uncaught page error and saves a full-page screenshot to ``artifacts_dir`` when the
  test ends (pass or fail).
- ``artifacts_dir``: ``$PLAYWRIGHT_ARTIFACTS``, or ``build/browser-artifacts/`` (gitignored).

The tests skip, naming what is missing, when Playwright or Chromium is absent, unless
``POLICYLANG_REQUIRE_BROWSER=1`` (``.ci/run`` sets it once Chromium is installed): then
they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _missing(reason: str):
    if os.environ.get("POLICYLANG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required here (POLICYLANG_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


def chromium_path() -> str | None:
    given = os.environ.get("PLAYWRIGHT_CHROMIUM")
    if given:
        return given if os.path.exists(given) else None
    for c in CHROMIUM_CANDIDATES:
        if os.path.exists(c):
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    d = Path(os.environ.get("PLAYWRIGHT_ARTIFACTS") or REPO / "build" / "browser-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module. Not per session: Playwright's sync API keeps an asyncio
    loop running in the main thread while it is open, so every later test that calls
    asyncio.run() (the guards, the MCP and LSP tests) would fail; it stops on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; it is in the dev extra)")
    exe = chromium_path()
    if exe is None:
        _missing("no Chromium at /usr/bin/chromium (apt-get install chromium, or set PLAYWRIGHT_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def browser_page(browser, artifacts_dir, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(15_000)
    yield page
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    try:
        page.screenshot(path=str(artifacts_dir / f"{name}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@pytest.fixture
def serve_playground():
    """A factory: ``serve_playground(path, audit=None, allow_write=False, **kw)`` -> base URL."""
    uvicorn = pytest.importorskip("uvicorn", reason="the server extra is not installed (pip install 'policylang[server]')")
    from policylang.playground.app import create_app

    running: list[tuple] = []

    def start(path, audit=None, allow_write: bool = False, **kw) -> str:
        app = create_app(os.fspath(path), read_only=not allow_write, audit_path=audit, **kw)
        sock = _free_socket()
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        started = threading.Event()

        def wait() -> None:
            while not server.started and thread.is_alive():
                started.wait(0.05)
        wait()
        if not server.started:
            raise RuntimeError("the playground did not start")
        return f"http://127.0.0.1:{port}/"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(10)
        sock.close()
