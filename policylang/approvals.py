"""Re-export: the module lives in :mod:`policylang.privilege.approvals`.

``policylang.approvals`` is the same module object (not a copy), so ``isinstance`` and
monkeypatching work through either name.
"""

import sys

from .privilege import approvals as _module

sys.modules[__name__] = _module
