"""Tools for authors and CI built on the library: the policy test runner and SARIF output.

The command line (:mod:`policylang.cli`) is the front door to these.
"""
