"""The ``policylang`` command line: one module per subcommand.

Exit statuses (docs/cli.md): 0 success, 1 a finding (errors, failures, a file that would
change), 2 usage. Heavy imports (the engine, the web server) happen inside the
subcommands, so ``policylang check`` starts fast.
"""

from __future__ import annotations

import importlib

import click

#: subcommand name -> module (inside policylang.cli) defining a click command ``command``
SUBCOMMANDS = {
    "check": "check",
    "fmt": "fmt",
    "test": "test",
    "eval": "eval",
    "serve": "serve",
    "token": "token",
    "approvals": "approvals",
    "audit": "audit",
    "diff": "diff", "query": "query",
    "report": "report",
    "lsp": "lsp",
    "playground": "playground",
}


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx):
        return list(SUBCOMMANDS)

    def get_command(self, ctx, name):
        mod = SUBCOMMANDS.get(name)
        if mod is None:
            return None
        return importlib.import_module(f"policylang.cli.{mod}").command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="policylang")
def main() -> None:
    """policylang: authorization policies for AI agents and other workloads."""
    _tune_gc_for_this_process()


#: the young-generation threshold the CLI (``check``, ``test``, ``serve`` …) runs with
#: (docs/engine.md#loading): loading the 10,000-rule benchmark set takes about 0.7–0.8 s
#: of CPU with it and 1.0–1.1 s with the default 700 (``python -m benchmarks.compare``
#: times both)
GC_GEN0_THRESHOLD = 50_000


def _tune_gc_for_this_process() -> None:
    """The CLI owns its process, so it may tune the collector; library code never does.

    Loading a large policy set allocates many long-lived objects and makes almost no
    reference cycles, so the default young-generation threshold (700) makes the cyclic
    collector rescan the growing tree again and again. A higher threshold keeps cyclic
    garbage collected while doing a small fraction of that work.
    """
    import gc

    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_GEN0_THRESHOLD), gen1, gen2)
