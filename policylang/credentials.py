"""Re-export: the module lives in :mod:`policylang.privilege.credentials`.

``policylang.credentials`` is the same module object (not a copy), so ``isinstance`` and
monkeypatching work through either name.
"""

import sys

from .privilege import credentials as _module

sys.modules[__name__] = _module
