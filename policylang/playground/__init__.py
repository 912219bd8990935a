"""The policylang playground (docs/playground.md): a page served by the project for editing
a policy set with its diagnostics as you type, deciding requests with the delegation path
and the rule trace drawn, and seeing which example requests an edit changes.

Needs the ``server`` extra (Starlette via FastAPI, uvicorn); importing ``policylang`` does
not import this package. ``create_app`` and ``mount_ui`` live in :mod:`.app`.
"""
