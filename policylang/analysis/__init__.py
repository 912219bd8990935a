"""Policy analysis on the z3 SMT solver (extra "analysis"; docs/analysis.md): the encoding
of a set's decisions (encode), and the questions asked of it (solve: diff, query)."""
