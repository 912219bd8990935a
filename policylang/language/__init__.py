"""The front end: policy text in, a checked :class:`~policylang.language.policyset.PolicySet` out.

``source`` (spans) → ``parser`` (text → ``nodes``, the typed AST) → ``checker`` (named
stages → diagnostics) → ``policyset`` (the checked set); ``loader`` reads files and
directories through those phases, ``formatter`` turns the AST back into canonical text.
``roots`` is the one table of what a policy can read from a request; ``globs`` is the
one pattern automaton; ``words`` holds the shared vocabulary (durations, "did you mean").

Nothing here imports the engine, the server or the zero-standing-privilege pieces.
"""
