"""Parsing of the environment into Django settings, failing loudly on bad values.

django-environ does the parsing; it is lenient (an unknown scheme becomes an
empty engine with only a warning), so the checks here turn every malformed value
into an ImproperlyConfigured that names the variable. Messages never echo a
password: URLs are shown with their credentials masked.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

SUPPORTED_DATABASE_ENGINES = {
    "django.db.backends.postgresql": "postgres://USER:PASSWORD@HOST:PORT/NAME",
    "django.db.backends.sqlite3": "sqlite:///ABSOLUTE/PATH.sqlite3",
}


def mask_url(url: str) -> str:
    """The URL with any password replaced by '***', safe to show in an error or a log."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def database_config(url: str, *, variable: str = "DATABASE_URL") -> dict:
    """Django DATABASES entry for a database URL, or ImproperlyConfigured saying what is wrong."""
    try:
        config = environ.Env.db_url_config(url)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{variable}={mask_url(url)!r} is malformed: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine not in SUPPORTED_DATABASE_ENGINES:
        examples = " or ".join(SUPPORTED_DATABASE_ENGINES.values())
        raise ImproperlyConfigured(f"{variable}={mask_url(url)!r} is not a supported database URL; expected {examples}")
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{variable}={mask_url(url)!r} names no database")
    return config


def redis_url(url: str, *, variable: str = "REDIS_URL") -> str:
    """The Redis URL itself once checked for a redis:// or rediss:// scheme and a host."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ImproperlyConfigured(f"{variable}={mask_url(url)!r} is not a Redis URL; expected redis://HOST:PORT/DB")
    try:
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError:
        raise ImproperlyConfigured(f"{variable}={mask_url(url)!r} has a malformed port") from None
    return url


RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)?\s*(s|m|h)?\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, None: 1}


def redis_channel_layer(url: str) -> dict:
    """The channel layer on Redis (channels-redis). redis-py 8 reads with a 5 s timeout by default,
    as long as channels-redis's blocking receive waits: an idle socket's consumer would then crash
    at 5 s (channels_redis#422), so its connections wait longer."""
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": url, "socket_timeout": 10}], "prefix": "pulse:channels"},
    }


def rate_limit(value: str, *, variable: str = "RATE_LIMIT") -> tuple[int, int]:
    """(requests, window seconds) from '60/60s', '100/m' or '1000/1h'."""
    match = RATE_PATTERN.match(value)
    if not match or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ImproperlyConfigured(
            f"{variable}={value!r} is malformed; expected REQUESTS/WINDOW such as 60/60s, 100/m or 1000/1h"
        )
    count, amount, unit = match.groups()
    if amount is None and unit is None:
        raise ImproperlyConfigured(f"{variable}={value!r} has no window; expected e.g. 60/60s")
    return int(count), int(amount or 1) * UNIT_SECONDS[unit]


def comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
