"""Two fixes to moto's DynamoDB (5.2.5) for the local stack, whose moto server runs in-process.

1. moto is not thread-safe: TransactWriteItems deep-copies a table (its rollback backup) while
   other request threads write to it, and fails with "dictionary changed size during iteration"
   (a 500 that botocore retries — slowly — or that loses the write). DynamoDB requests are
   serialised with one lock (DynamoDB has no long polling to hold it).
2. TransactWriteItems backs up the whole table once per item of the transaction, which makes a
   100-item transaction on a table of a few thousand items take seconds: the backup is taken
   once per table and transaction.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

_lock = threading.RLock()
_backups = threading.local()
_applied = False


class _CopyOncePerTransaction:
    """Stands in for the `copy` module inside moto's DynamoDB models."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        cache: dict[int, Any] | None = getattr(_backups, "cache", None)
        # Only the table backups: they live through the whole call, so their ids are stable.
        if cache is None or type(value).__name__ != "Table":
            return copy.deepcopy(value, memo)
        if id(value) not in cache:
            cache[id(value)] = copy.deepcopy(value, memo)
        return cache[id(value)]


def apply() -> None:
    """Patch moto's DynamoDB in this process (once)."""
    global _applied
    if _applied:
        return
    from moto.dynamodb import models, responses

    call_action = responses.DynamoHandler.call_action

    @functools.wraps(call_action)
    def serialised(self: Any) -> Any:
        with _lock:
            return call_action(self)

    transact = models.DynamoDBBackend.transact_write_items

    @functools.wraps(transact)
    def transact_once(self: Any, transact_items: Any) -> Any:
        _backups.cache = {}
        try:
            return transact(self, transact_items)
        finally:
            _backups.cache = None

    responses.DynamoHandler.call_action = serialised  # type: ignore[method-assign]
    models.DynamoDBBackend.transact_write_items = transact_once  # type: ignore[method-assign]
    models.copy = _CopyOncePerTransaction()  # type: ignore[assignment]
    _applied = True
