"""Pulse settings, read from the environment (see .env.example for every variable).

With nothing set, Pulse runs on embedded defaults: a SQLite file, an in-process
cache and channel layer, and a Celery broker kept in files (no server needed).
DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import django_stubs_ext
import environ

from pulse import config

# Lets classes Django does not make generic at run time (ModelAdmin, Paginator, ...) take the type
# parameters django-stubs gives them, e.g. `class LedgerPaginator(Paginator[UsageRecord])`.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("PULSE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in var/ for this install."""
    if value := env.str("SECRET_KEY", default=""):
        return value
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = config.comma_list(env.str("ALLOWED_HOSTS", default="localhost,127.0.0.1,[::1]"))
CSRF_TRUSTED_ORIGINS = config.comma_list(env.str("CSRF_TRUSTED_ORIGINS", default=""))
PORT = env.int("PORT", default=8081)

# Daphne's app is there for its runserver: `manage.py runserver` then serves ASGI_APPLICATION (the
# Channels consumers and websockets included) for development. It loads Twisted, Autobahn and
# pyOpenSSL, about 12 MB a process, so only that command gets it: never an ASGI worker (uvicorn).
DEV_SERVER = sys.argv[1:2] == ["runserver"]

INSTALLED_APPS = [
    *(["daphne"] if DEV_SERVER else []),  # first, so that its runserver wins over Django's
    "pulse.admin_site.PulseAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_ratelimit",
    "channels",
    "gateway",
    "providers",
    "billing",
]

MIDDLEWARE = [
    "core.observability.RequestIdMiddleware",
    "core.observability.MetricsMiddleware",
    "billing.throttling.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pulse.urls"
ASGI_APPLICATION = "pulse.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------
DATABASES = {
    "default": config.database_config(env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'pulse.sqlite3'}"))
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL: readers do not block the writer, and a commit is an append rather than a journal
    # rewrite (the embedded default writes a ledger row per request). IMMEDIATE transactions
    # take the write lock up front, so concurrent writers queue instead of failing "locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
            "transaction_mode": "IMMEDIATE",
        }
    )
    # Keep the connection: reopening the file (and re-running the PRAGMAs) per ledger write costs
    # milliseconds. PostgreSQL gets its reuse from the connection pool below instead.
    DATABASES["default"]["CONN_MAX_AGE"] = None
DATABASE_POOL_SIZE = env.int("DATABASE_POOL_SIZE", default=10)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A psycopg connection pool per process: the ledger write on every request must not open a
    # connection each time. Short timeouts so /readyz answers quickly when PostgreSQL is down.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "connect_timeout": 3,
            "pool": {"min_size": 1, "max_size": DATABASE_POOL_SIZE, "timeout": 5},
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = config.redis_url(env.str("REDIS_URL")) if env.str("REDIS_URL", default="") else ""
# Redis connections per worker process for the hot path (rate limits, circuit breakers).
REDIS_POOL_SIZE = env.int("REDIS_POOL_SIZE", default=64)

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "pulse",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    CHANNEL_LAYERS = {"default": config.redis_channel_layer(REDIS_URL)}
    # django-ratelimit (the admin login) only recognises memcached and django-redis backends and
    # warns about any other; Django's own RedisCache is just as fit: shared, and incr is atomic in Redis.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # django-ratelimit warns that an in-process cache is not shared between workers;
    # that is the documented trade-off of the embedded defaults (one process).
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001", "django_ratelimit.E003"]

# --- Celery (media jobs) -----------------------------------------------------
# Without a broker server, Celery passes messages through files under var/celery:
# the worker still runs beside the web process, never eagerly inside a request.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _celery_dir = VAR_DIR / "celery"
    for _sub in ("queue", "processed", "control"):
        (_celery_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "processed_folder": str(_celery_dir / "processed"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
    }
else:
    # A task's message stays unacknowledged until it finishes (acks_late); Redis hands it out again
    # after this long, so it must outlast the longest poll countdown and a task's time limit.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 1800}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a worker process killed mid-task puts its message back
CELERY_BEAT_SCHEDULE = {
    "reap-stuck-jobs": {"task": "gateway.jobs.tasks.reap_jobs", "schedule": 60.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_IMPORTS = ("gateway.jobs.tasks",)

# --- Media jobs (gateway/jobs) -------------------------------------------------
# Generated files are copied into Django's default storage: files under MEDIA_ROOT, or an
# S3-compatible bucket when JOB_STORAGE_S3_BUCKET is set (credentials from the usual AWS_* variables).
MEDIA_ROOT = env.str("MEDIA_ROOT", default="") or str(VAR_DIR / "media")
JOB_STORAGE_S3_BUCKET = env.str("JOB_STORAGE_S3_BUCKET", default="")
if JOB_STORAGE_S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": JOB_STORAGE_S3_BUCKET,
            "endpoint_url": env.str("JOB_STORAGE_S3_ENDPOINT_URL", default="") or None,
            "default_acl": "private",
            "querystring_auth": True,
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# How long a signed output URL works (an <img> on a page can use it without the API key).
JOB_OUTPUT_URL_TTL_S = env.int("JOB_OUTPUT_URL_TTL_S", default=3600)
JOB_MAX_OUTPUT_BYTES = env.int("JOB_MAX_OUTPUT_BYTES", default=512 * 1024 * 1024)
# A worker holds a job this long per task; one that dies is taken over once the lease ends,
# at most JOB_MAX_TAKEOVERS times before the job fails (worker_lost).
JOB_LEASE_S = env.float("JOB_LEASE_S", default=600.0)
JOB_MAX_TAKEOVERS = env.int("JOB_MAX_TAKEOVERS", default=3)
# A job with no progress this long past when it was due is handed to a worker again (the reaper).
JOB_STALE_GRACE_S = env.float("JOB_STALE_GRACE_S", default=120.0)
# When every provider failed with a retryable error: retries of the whole job, with backoff.
JOB_MAX_RETRIES = env.int("JOB_MAX_RETRIES", default=3)
JOB_RETRY_BACKOFF_S = env.float("JOB_RETRY_BACKOFF_S", default=5.0)
# Seconds between polls of a long-running provider operation (Veo, Replicate); the official samples use 10.
JOB_POLL_S = env.float("JOB_POLL_S", default=10.0)
# The longest `Prefer: wait=N` honoured.
JOB_MAX_WAIT_S = 60

# --- API ---------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["gateway.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "gateway.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["billing.throttling.UserRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Pulse AI Gateway",
    "DESCRIPTION": "One front door to many AI providers: chat, images and video.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Bodies larger than this are refused before they are parsed (images in chat come as base64).
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=20 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

# The garbage collector in a worker (core/gcpacer.py): no automatic collection; a full one when the
# worker is idle, GC_IDLE_EVERY_S apart at least, or once GC_GROWTH_LIMIT more tracked objects were
# made than freed since the last.
GC_IDLE_EVERY_S = env.float("GC_IDLE_EVERY_S", default=60.0)
GC_GROWTH_LIMIT = env.int("GC_GROWTH_LIMIT", default=1_000_000)

# WebSocket chat (/ws/v1/chat): concurrent streams one socket may run, and how long a frame may wait
# for a client that stopped reading before the socket is closed.
WS_MAX_STREAMS = env.int("WS_MAX_STREAMS", default=8)
WS_SEND_TIMEOUT_S = env.float("WS_SEND_TIMEOUT_S", default=10.0)

# Images in chat given by URL, fetched by Pulse for the providers that need the bytes (Gemini):
# at most this big, within this time, and never from a loopback, private or link-local address
# (CHAT_IMAGE_FETCH_PRIVATE=true lifts that for a trusted internal network, and for the tests).
CHAT_IMAGE_MAX_BYTES = env.int("CHAT_IMAGE_MAX_BYTES", default=20 * 1024 * 1024)
CHAT_IMAGE_FETCH_TIMEOUT_S = env.float("CHAT_IMAGE_FETCH_TIMEOUT_S", default=10.0)
CHAT_IMAGE_FETCH_PRIVATE = env.bool("CHAT_IMAGE_FETCH_PRIVATE", default=False)

# How long a worker trusts its in-process copy of an API key or the routing
# table before it checks the shared cache again: the bound on how long a revoked
# key or an admin edit takes to reach every worker.
PULSE_LOCAL_CACHE_SECONDS = env.float("PULSE_LOCAL_CACHE_SECONDS", default=1.0)

RATE_LIMIT = config.rate_limit(env.str("RATE_LIMIT", default="60/60s"))
MODERATION_BLOCKLIST = config.comma_list(env.str("MODERATION_BLOCKLIST", default=""))

# --- Moderation (gateway/moderation) -------------------------------------------
# Hooks run in this order on every prompt before any provider call (dotted paths; an
# operator's own hook is one more path). The OpenAI hook is not on by default: it adds a
# network call to every request.
MODERATION_HOOKS = config.comma_list(
    env.str(
        "MODERATION_HOOKS",
        default="gateway.moderation.hooks.blocklist.BlocklistHook,gateway.moderation.hooks.pii.PiiHook",
    )
)
# Keep the blocked (or redacted) text in ModerationEvent rows; off: only who, when and why.
MODERATION_STORE_PROMPTS = env.bool("MODERATION_STORE_PROMPTS", default=False)
# Also run the hooks on non-streaming chat answers before they reach the client.
MODERATION_CHECK_RESPONSES = env.bool("MODERATION_CHECK_RESPONSES", default=False)
# PII hook: "redact" (replace with [EMAIL], [PHONE], [CARD]) or "block"; and which kinds to look for.
MODERATION_PII_ACTION = env.str("MODERATION_PII_ACTION", default="redact")
MODERATION_PII_KINDS = config.comma_list(env.str("MODERATION_PII_KINDS", default="email,phone,card"))
# OpenAI moderation hook: the Provider row to call (default: the enabled one of kind openai),
# model, per-category score thresholds (categories without one block when the API flags them),
# what to do when the API cannot answer (default: refuse with 503), and its total timeout.
MODERATION_OPENAI_PROVIDER = env.str("MODERATION_OPENAI_PROVIDER", default="")
MODERATION_OPENAI_MODEL = env.str("MODERATION_OPENAI_MODEL", default="omni-moderation-latest")
MODERATION_OPENAI_THRESHOLDS = env.dict("MODERATION_OPENAI_THRESHOLDS", default={})
MODERATION_OPENAI_FAIL_OPEN = env.bool("MODERATION_OPENAI_FAIL_OPEN", default=False)
MODERATION_OPENAI_TIMEOUT_S = env.float("MODERATION_OPENAI_TIMEOUT_S", default=2.0)

# Brute-force protection on the admin login (django-ratelimit), per client IP
# and per attempted username.
ADMIN_LOGIN_RATE_PER_IP = env.str("ADMIN_LOGIN_RATE_PER_IP", default="20/m")
ADMIN_LOGIN_RATE_PER_USERNAME = env.str("ADMIN_LOGIN_RATE_PER_USERNAME", default="5/m")

# Key for encrypting provider API keys at rest; defaults to one derived from SECRET_KEY.
PULSE_ENCRYPTION_KEY = env.str("PULSE_ENCRYPTION_KEY", default="")

# --- Providers (sync_providers turns these into Provider rows) ---------------
PROVIDER_ENV = {
    "openai": {
        "api_key": env.str("OPENAI_API_KEY", default=""),
        "base_url": env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1"),
    },
    "anthropic": {
        "api_key": env.str("ANTHROPIC_API_KEY", default=""),
        "base_url": env.str("ANTHROPIC_BASE_URL", default="https://api.anthropic.com"),
    },
    "gemini": {
        "api_key": env.str("GEMINI_API_KEY", default=""),
        "base_url": env.str("GEMINI_BASE_URL", default="https://generativelanguage.googleapis.com"),
    },
    "replicate": {
        "api_key": env.str("REPLICATE_API_TOKEN", default=""),
        "base_url": env.str("REPLICATE_BASE_URL", default="https://api.replicate.com"),
    },
    # Any server speaking OpenAI's chat completions (vLLM, Ollama, LM Studio, ...): its base URL
    # (with /v1) creates the provider, as local servers often take no key. Each listed model becomes
    # a chat route, and local:NAME reaches any other; unpriced (403 model_not_priced) unless both
    # prices are set, 0 included.
    "openai_compatible": {
        "api_key": env.str("OPENAI_COMPATIBLE_API_KEY", default=""),
        "base_url": env.str("OPENAI_COMPATIBLE_BASE_URL", default=""),
        "models": env.list("OPENAI_COMPATIBLE_MODELS", default=[]),
        "input_usd_per_mtok": env.str("OPENAI_COMPATIBLE_INPUT_USD_PER_MTOK", default=""),
        "output_usd_per_mtok": env.str("OPENAI_COMPATIBLE_OUTPUT_USD_PER_MTOK", default=""),
    },
}

# --- Auth, i18n, static ------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# WhiteNoise serves admin and API-docs assets from the installed apps directly,
# so a fresh checkout works offline without a collectstatic step.
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Logging: one JSON object per line, each with the request id -------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.observability.RequestIdLogFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "uvicorn.access": {"level": "WARNING"},
    },
}
