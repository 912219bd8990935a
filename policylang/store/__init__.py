"""Re-export: the package lives in :mod:`policylang.privilege.store`.

``policylang.store``, ``policylang.store.sqlite_store`` and
``policylang.store.redis_store`` are the same module objects as their
``policylang.privilege.store`` counterparts (not copies), so ``isinstance`` and
monkeypatching work through either name. (Both backends import cheaply: the ``redis``
client is imported only when a Redis store is opened.)
"""

import sys

from ..privilege import store as _module
from ..privilege.store import redis_store as _redis_store
from ..privilege.store import sqlite_store as _sqlite_store

sys.modules[__name__ + ".sqlite_store"] = _sqlite_store
sys.modules[__name__ + ".redis_store"] = _redis_store
sys.modules[__name__] = _module
