"""Readiness checks: each returns None when the dependency answers, or what went wrong."""

from __future__ import annotations

from collections.abc import Callable

from celery import current_app as celery_app
from django.db import connections

from core.cache import cache


def _describe(exc: Exception) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def check_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def check_cache() -> None:
    cache.set("readyz:probe", "1", 5)
    if cache.get("readyz:probe") != "1":
        raise RuntimeError("value written was not read back")


def check_broker() -> None:
    # The project's Celery app (pulse/__init__.py makes it current when settings load).
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)


READINESS_CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
}


def readiness() -> dict[str, str]:
    """{"database": "ok" | "<what failed>", ...} for every dependency."""
    results = {}
    for name, check in READINESS_CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which and why
            results[name] = _describe(exc)
    return results
