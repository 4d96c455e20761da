"""MobileSD settings.

Every setting that varies between installations is read from the environment here,
and only here (see `.env.example` for the full list). With nothing set, MobileSD runs
on the embedded default: SQLite and a broker stored under `data/`, media under
`data/media/`. `DATABASE_URL` and `CELERY_BROKER_URL` switch to PostgreSQL and Redis.
"""

import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from environs import Env

BASE_DIR = Path(__file__).resolve().parent.parent


class _Env(Env):
    """environs' reader, where a blank value (`X=` in `.env`, `X= ` exported) means unset,
    as it always has here: commenting a line out or emptying it both restore the default."""

    def _get_value(self, env_key: str, default: Any) -> Any:
        value = super()._get_value(env_key, default)
        if isinstance(value, str):
            value = value.strip()
            return value if value else default
        return value


env = _Env()
# `.env` in the project root (or the file MOBILESD_ENV_FILE names) is read first; a variable
# set in the real environment wins over it.
env.read_env(env.str("MOBILESD_ENV_FILE", "") or BASE_DIR / ".env", recurse=False)


def _positive(name: str, default: float) -> float:
    """A float from the environment; `default` when unset, zero or negative."""
    value = env.float(name, default)
    return value if value > 0 else default


def _url(name: str, default: str = "") -> str:
    """A URL with a scheme (postgres://, redis://, sqla+sqlite:///, https://), or `default`."""
    value: str = env.str(name, default)
    if value and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://.*", value):
        # The value itself is not shown: it may hold a password.
        raise ImproperlyConfigured(
            f'Environment variable "{name}" invalid: not a URL (scheme://host/...).'
        )
    return value


def _list(name: str) -> list[str]:
    items: list[str] = env.list(name, [])
    return [item.strip() for item in items if item.strip()]


def _networks(
    name: str, default: str = ""
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Addresses or networks (CIDR), comma-separated; `default` (the same form) when unset."""
    networks = []
    for value in _list(name) or [item for item in default.split(",") if item]:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f'Environment variable "{name}" invalid: {value!r} is not an address or a '
                "network (e.g. 192.168.0.0/16)."
            ) from None
    return tuple(networks)


DATA_DIR = Path(env.str("MOBILESD_DATA_DIR", "") or BASE_DIR / "data")
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The configured key, or one generated once and kept in `data/` so sessions survive."""
    configured = env.str("DJANGO_SECRET_KEY", "")
    if configured:
        return configured
    key_file = DATA_DIR / ".secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DJANGO_DEBUG", False)
# Where phones reach MobileSD (scheme, host and port: https://mobilesd.example.org or
# http://192.168.1.5:8000). Absolute links (image URLs) are built from it; without it they
# are paths. Its host is always an allowed host, its origin a trusted CSRF origin.
MOBILESD_PUBLIC_URL = env.str("MOBILESD_PUBLIC_URL", "").rstrip("/")


def _public_origin() -> tuple[str, str]:
    """(scheme://host[:port], host as ALLOWED_HOSTS writes it) of MOBILESD_PUBLIC_URL."""
    if not MOBILESD_PUBLIC_URL:
        return "", ""
    parts = urlsplit(MOBILESD_PUBLIC_URL)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ImproperlyConfigured("MOBILESD_PUBLIC_URL must be an http(s) URL with a host.")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}", host


_PUBLIC_ORIGIN, _PUBLIC_HOST = _public_origin()
# How long a signed image link (`?exp=&sig=`, queue_app.links) opens its image without an
# API key: a week by default; each expiry is rounded up to an eighth of this, so a link is
# good for up to 9/8 of it and stays the same URL for an eighth.
MOBILESD_SIGNED_LINK_SECONDS = int(_positive("MOBILESD_SIGNED_LINK_SECONDS", 7 * 24 * 3600))
# The Host header names the site in links and redirects: only names this machine answers
# to by default (what `make run` prints, and this machine's own name on the LAN), plus the
# public URL's host and whatever DJANGO_ALLOWED_HOSTS adds (`*` restores "any").
_MACHINE = socket.gethostname().lower()
ALLOWED_HOSTS = list(
    dict.fromkeys(
        ["localhost", "127.0.0.1", "[::1]"]
        + ([_MACHINE, f"{_MACHINE}.local"] if _MACHINE else [])
        + ([_PUBLIC_HOST] if _PUBLIC_HOST else [])
        + _list("DJANGO_ALLOWED_HOSTS")
    )
)
CSRF_TRUSTED_ORIGINS = _list("DJANGO_CSRF_TRUSTED_ORIGINS") + (
    [_PUBLIC_ORIGIN] if _PUBLIC_ORIGIN else []
)

INSTALLED_APPS = [
    # First, so that its admin templates (base_site, index) win over the admin's own.
    "dashboard_app.apps.DashboardConfig",
    # django.contrib.admin with the dashboard's AdminSite as `admin.site`.
    "dashboard_app.apps.DashboardAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core_app",
    "servers_app",
    "queue_app",
    "civitai_app",
    "debug_app",
    "events_app.apps.EventsConfig",
    "notifications_app.apps.NotificationsConfig",
]

# Every one async-capable: under ASGI a sync-only middleware is a hop to a thread and back
# for every request, and the event stream's requests share one thread (core_app.asgi).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core_app.middleware.RefuseNulMiddleware",
    "core_app.middleware.StaticFilesMiddleware",  # WhiteNoise's, in both modes
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mobilesd.urls"
WSGI_APPLICATION = "mobilesd.wsgi.application"
ASGI_APPLICATION = "mobilesd.asgi.application"  # the Procfile's web (gunicorn + uvicorn workers)

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- Database -------------------------------------------------------------------------
DATABASES = {
    "default": env.dj_db_url(
        "DATABASE_URL",
        f"sqlite:///{DATA_DIR / 'mobilesd.sqlite3'}",
        conn_max_age=env.int("DATABASE_CONN_MAX_AGE", 0),
    )
}
# A pool of PostgreSQL connections in each process that sets DATABASE_POOL_SIZE, as the
# Procfile's web does: a request then takes a connection whose server process is running
# and has read the tables already, where opening one (a new server process, its caches
# empty) was a third of a status read. Not for the worker, which replaces it at start-up by
# a pool sized for its threads (mobilesd/celery.py, WORKER_DATABASE_POOL below).
DATABASE_POOL_SIZE = env.int("DATABASE_POOL_SIZE", 0)
if DATABASE_POOL_SIZE < 0:
    raise ImproperlyConfigured('Environment variable "DATABASE_POOL_SIZE" invalid: below 0.')
# A request waits this long (seconds) for a free pooled connection, then fails instead of
# hanging: a 503 `database_unavailable`, as when the database is down (core_app.exceptions).
DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", 10.0)
if DATABASE_POOL_TIMEOUT <= 0:
    raise ImproperlyConfigured('Environment variable "DATABASE_POOL_TIMEOUT" invalid: not above 0.')
if DATABASE_POOL_SIZE and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    if DATABASES["default"]["CONN_MAX_AGE"]:
        raise ImproperlyConfigured(
            "DATABASE_POOL_SIZE and DATABASE_CONN_MAX_AGE cannot both be set: a pooled "
            "connection goes back to the pool after each request."
        )
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT,
    }
# Each worker keeps a pool of its own on PostgreSQL, sized for its threads, and opens and
# warms the connections its enabled servers use before jobs come (queue_app.connections):
# off, e.g. behind PgBouncer, each of its threads opens and closes its own.
WORKER_DATABASE_POOL = env.bool("WORKER_DATABASE_POOL", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: WAL lets readers run beside the writer, and
    # IMMEDIATE transactions take the write lock up front instead of failing mid-way.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (throttling) ---------------------------------------------------------------
CACHE_URL = _url("CACHE_URL")
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            # Throttling fails open when the cache is down; a dead host must not hang
            # every request first.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
        if CACHE_URL.startswith(("redis://", "rediss://"))
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media -----------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", "") or DATA_DIR / "media")
# /api/v1/health answers 503 when the media storage has less free space than this.
MOBILESD_MEDIA_MIN_FREE_BYTES = env.int("MOBILESD_MEDIA_MIN_FREE_BYTES", 100 * 1024 * 1024)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve the admin's assets straight from the installed apps: `make run` needs no
# collectstatic step.
WHITENOISE_USE_FINDERS = True

# --- Request limits -------------------------------------------------------------------
MOBILESD_MAX_BODY_BYTES = env.int("MOBILESD_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MOBILESD_MAX_BODY_BYTES
MOBILESD_MAX_PROMPT_LENGTH = env.int("MOBILESD_MAX_PROMPT_LENGTH", 10_000)
MOBILESD_DEFAULT_PAGE_SIZE = env.int("MOBILESD_DEFAULT_PAGE_SIZE", 50)
MOBILESD_MAX_PAGE_SIZE = env.int("MOBILESD_MAX_PAGE_SIZE", 200)
# The most jobs one batch (POST /api/v1/batches: its items, or the product of its axes) makes.
MOBILESD_BATCH_MAX_JOBS = env.int("MOBILESD_BATCH_MAX_JOBS", 500)

# Uploads (POST /api/v1/uploads: the input images of img2img and inpaint jobs): the most
# bytes and pixels of one, and how long one no job references is kept after its last use.
MOBILESD_UPLOAD_MAX_BYTES = env.int("MOBILESD_UPLOAD_MAX_BYTES", 20 * 1024 * 1024)
MOBILESD_UPLOAD_MAX_PIXELS = env.int("MOBILESD_UPLOAD_MAX_PIXELS", 4096 * 4096)
MOBILESD_UPLOAD_RETENTION_SECONDS = env.float("MOBILESD_UPLOAD_RETENTION_SECONDS", 24 * 3600.0)
MOBILESD_UPLOAD_CLEANUP_SECONDS = env.float("MOBILESD_UPLOAD_CLEANUP_SECONDS", 3600.0)

# --- API: authentication, throttling, CORS --------------------------------------------
# Every /api/v1/ endpoint needs an API key unless this is set (a trusted network only).
MOBILESD_ALLOW_ANONYMOUS = env.bool("MOBILESD_ALLOW_ANONYMOUS", False)
# Anonymous requests act as this user (created when first needed), with the admin scope:
# the trusted network is one household's own.
MOBILESD_ANONYMOUS_USER = env.str("MOBILESD_ANONYMOUS_USER", "local")
MOBILESD_THROTTLE_RATE = env.str("MOBILESD_THROTTLE_RATE", "600/min")
# After this many failed sign-ins (wrong API keys, wrong admin passwords) from one address
# within the window (seconds), further attempts from it are refused (429) until it ends.
MOBILESD_FAILED_ATTEMPTS_LIMIT = env.int("MOBILESD_FAILED_ATTEMPTS_LIMIT", 10)
MOBILESD_FAILED_ATTEMPTS_WINDOW = env.int("MOBILESD_FAILED_ATTEMPTS_WINDOW", 900)
# The reverse proxies in front of the web tier (addresses or networks). A request that one
# of them forwards is counted (failed sign-ins, anonymous requests) for the client address
# they report in X-Forwarded-For, and its scheme is theirs (X-Forwarded-Proto); without
# them, every request is counted for its connection's peer: behind a proxy, the proxy's.
MOBILESD_TRUSTED_PROXIES = _networks("MOBILESD_TRUSTED_PROXIES")

CORS_ALLOWED_ORIGINS = _list("CORS_ALLOWED_ORIGINS")
CORS_ALLOW_ALL_ORIGINS = env.bool("CORS_ALLOW_ALL_ORIGINS", False)
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "x-api-key",
    "x-requested-with",
)
# Browsers hide other response headers from cross-origin scripts; model lists page with it.
CORS_EXPOSE_HEADERS: tuple[str, ...] = ("x-total-count",)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core_app.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core_app.permissions.HasApiKeyOrStaff"],
    "DEFAULT_THROTTLE_CLASSES": ["core_app.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": MOBILESD_THROTTLE_RATE},
    "DEFAULT_PARSER_CLASSES": ["core_app.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "core_app.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core_app.schema.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "MobileSD API",
    "DESCRIPTION": (
        "Queue Stable Diffusion generations on Forge / AUTOMATIC1111 servers from a phone. "
        "Send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # 3.1: a nullable reference is `oneOf: [{$ref}, {type: null}]`, which validators and
    # client generators read alike (3.0's `allOf` + `nullable` is read either way).
    "OAS_VERSION": "3.1.0",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core_app.schema.anonymous_security",
    ],
}

# --- Generation engine ----------------------------------------------------------------
# A running job's lease: renewed every heartbeat (in a thread of its own, whatever the
# server and the database are doing); a job whose lease lapses (dead worker) is requeued
# by the lease recovery, which looks every LEASE_RECOVERY_SECONDS. A killed worker thus
# costs its server at most heartbeat + lease + recovery (about 15 s) of idleness, and a
# database outage shorter than the lease costs a running job nothing.
MOBILESD_LEASE_SECONDS = env.float("MOBILESD_LEASE_SECONDS", 12.0)
MOBILESD_HEARTBEAT_SECONDS = env.float("MOBILESD_HEARTBEAT_SECONDS", 1.0)
# A running job's progress (and live preview) is written when it changed, at most this
# often: each write is an event (job.progress / job.preview) every follower receives.
MOBILESD_PROGRESS_MIN_SECONDS = env.float("MOBILESD_PROGRESS_MIN_SECONDS", 0.5)
MOBILESD_LEASE_RECOVERY_SECONDS = env.float("MOBILESD_LEASE_RECOVERY_SECONDS", 2.0)
MOBILESD_RECONCILE_SECONDS = env.float("MOBILESD_RECONCILE_SECONDS", 10.0)
# Every worker, and beat, notes that it is alive this often; /api/v1/health answers 503
# when no worker, or no beat, has done so within two periods (the queue would not move).
MOBILESD_WORKER_HEARTBEAT_SECONDS = _positive("MOBILESD_WORKER_HEARTBEAT_SECONDS", 10.0)
# The job counts (queue_app/counts.py) gain two rows at each change of a job's status; beat
# folds them into one row per key this often, so that a list's total sums a few rows.
MOBILESD_JOB_COUNTS_FOLD_SECONDS = _positive("MOBILESD_JOB_COUNTS_FOLD_SECONDS", 30.0)
# Servers are health-checked this often (offline ones at every reconcile).
MOBILESD_HEALTH_CHECK_SECONDS = env.float("MOBILESD_HEALTH_CHECK_SECONDS", 60.0)
# Transient failures (server unreachable mid-job, 5xx) retry with exponential backoff.
MOBILESD_MAX_RETRIES = env.int("MOBILESD_MAX_RETRIES", 3)
MOBILESD_RETRY_BACKOFF_SECONDS = env.float("MOBILESD_RETRY_BACKOFF_SECONDS", 5.0)
MOBILESD_RETRY_BACKOFF_MAX_SECONDS = env.float("MOBILESD_RETRY_BACKOFF_MAX_SECONDS", 300.0)
# Scheduler: how many queued jobs to look at for one whose checkpoint is already loaded,
# and how often a job may be passed over for that before it runs regardless.
MOBILESD_SCHEDULER_LOOKAHEAD = env.int("MOBILESD_SCHEDULER_LOOKAHEAD", 8)
MOBILESD_SCHEDULER_MAX_PASSES = env.int("MOBILESD_SCHEDULER_MAX_PASSES", 16)
# Quotas per user (core_app.UserQuota overrides them for one user; 0 = unlimited): the most
# jobs a user may have pending (beyond it a submit is a 429 `queue_limit`), and the most
# images one job may ask for (num_images; beyond it a 400).
MOBILESD_MAX_PENDING_PER_USER = env.int("MOBILESD_MAX_PENDING_PER_USER", 0)
MOBILESD_MAX_IMAGES_PER_JOB = env.int("MOBILESD_MAX_IMAGES_PER_JOB", 16)
# Quarantine: a server whose jobs failed this many times in a row for server-side reasons
# (a 5xx such as CUDA out-of-memory, a timeout; not a job's own error such as an unknown
# checkpoint) takes no jobs until, after the cooldown, a health check succeeds. 0: never.
MOBILESD_QUARANTINE_AFTER_FAILURES = env.int("MOBILESD_QUARANTINE_AFTER_FAILURES", 5)
MOBILESD_QUARANTINE_COOLDOWN_SECONDS = env.float("MOBILESD_QUARANTINE_COOLDOWN_SECONDS", 300.0)
# A waiting job's place and ETA (queue_app.eta): the schedule is played out exactly for
# this many jobs of its server's queue; a job deeper in it is estimated from their mean.
MOBILESD_ETA_EXACT_JOBS = env.int("MOBILESD_ETA_EXACT_JOBS", 100)
# Model cache: refreshed this often; a cache younger than MODELS_FRESH_SECONDS is trusted
# to refuse an unknown checkpoint at submit time (an older one is checked at dispatch).
MOBILESD_MODELS_REFRESH_SECONDS = env.float("MOBILESD_MODELS_REFRESH_SECONDS", 900.0)
MOBILESD_MODELS_FRESH_SECONDS = env.float("MOBILESD_MODELS_FRESH_SECONDS", 1800.0)
# Timeouts of calls to generation servers. A job's read timeout is
# clamp(overhead + seconds per megapixel-step x its work, floor, cap): see
# queue_app.timeouts.job_timeout. Overhead: a checkpoint switch (2 s .. 2 min), the VAE
# decode, the transfer; the rate is generous (SDXL/Flux on a laptop GPU).
MOBILESD_FORGE_CONNECT_TIMEOUT = env.float("MOBILESD_FORGE_CONNECT_TIMEOUT", 5.0)
MOBILESD_FORGE_TIMEOUT_OVERHEAD = _positive("MOBILESD_FORGE_TIMEOUT_OVERHEAD", 120.0)
MOBILESD_FORGE_SECONDS_PER_MEGAPIXEL_STEP = _positive(
    "MOBILESD_FORGE_SECONDS_PER_MEGAPIXEL_STEP", 3.0
)
MOBILESD_FORGE_TIMEOUT_FLOOR = _positive("MOBILESD_FORGE_TIMEOUT_FLOOR", 300.0)
MOBILESD_FORGE_TIMEOUT_CAP = _positive("MOBILESD_FORGE_TIMEOUT_CAP", 3600.0)

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = _url("CELERY_BROKER_URL", f"sqla+sqlite:///{DATA_DIR / 'broker.sqlite3'}")
# The database is the queue of record; task results are never read.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Messages are acknowledged on receipt. They are only nudges ("look at the queue"): a job
# or download whose worker dies is recovered from its lease in the database, not by a
# redelivered message. And kombu/celery 5.7.0 crash a worker ("Unrecoverable error:
# AttributeError: 'NoneType' object has no attribute 'hostname'") when the broker
# connection drops while a message is unacknowledged: celery closes the connection again
# after collect() has detached its transport, and restoring the unacked message needs it.
# With late acks every running job held one, so every Redis restart stopped the worker
# (tests/integration/test_broker_restart.py).
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Without kombu's emulation of acknowledgements on Redis: a message is taken off its
    # list and that is all. The emulation keeps a copy of each message received until it
    # is acknowledged (a ZADD and an HSET, then a ZREM and an HDEL: two more round trips
    # for every message, on the consumer's one thread), to redeliver it after a visibility
    # timeout; but messages are acknowledged on receipt here, and what a lost one would
    # have asked for is recovered from the database (leases, the reconcile task). When a
    # burst of jobs nudges many servers at once, the consumer hands their tasks out one
    # after the other, and those round trips were half of its CPU (bench/README.md, "Many
    # servers").
    CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": False}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "recover-leases": {
        "task": "queue_app.tasks.recover_expired_leases",
        "schedule": MOBILESD_LEASE_RECOVERY_SECONDS,
        "options": {"expires": MOBILESD_LEASE_RECOVERY_SECONDS},
    },
    "reconcile-queue": {
        "task": "queue_app.tasks.reconcile",
        "schedule": MOBILESD_RECONCILE_SECONDS,
        "options": {"expires": MOBILESD_RECONCILE_SECONDS},
    },
    "fold-job-counts": {
        "task": "queue_app.tasks.fold_job_counts",
        "schedule": MOBILESD_JOB_COUNTS_FOLD_SECONDS,
        "options": {"expires": MOBILESD_JOB_COUNTS_FOLD_SECONDS},
    },
    "remove-unused-uploads": {
        "task": "queue_app.tasks.remove_unused_uploads",
        "schedule": MOBILESD_UPLOAD_CLEANUP_SECONDS,
        "options": {"expires": MOBILESD_UPLOAD_CLEANUP_SECONDS},
    },
    "refresh-models": {
        "task": "servers_app.tasks.refresh_all_models",
        "schedule": MOBILESD_MODELS_REFRESH_SECONDS,
        "options": {"expires": MOBILESD_MODELS_REFRESH_SECONDS},
    },
}
# A nudge that cannot be published (broker down) must not hold up an API request: the
# job is already stored, and the reconcile task will find it.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_TIMEZONE = "UTC"

# --- Logging --------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- Civitai --------------------------------------------------------------------------
# Image recipes and model downloads (civitai_app). The API key (also settable in the admin's
# Civitai settings, which win) is sent to Civitai only, as a Bearer header.
CIVITAI_BASE_URL = _url("CIVITAI_BASE_URL", "https://civitai.com")
CIVITAI_API_KEY = env.str("CIVITAI_API_KEY", "")
CIVITAI_CONNECT_TIMEOUT = env.float("CIVITAI_CONNECT_TIMEOUT", 10.0)
CIVITAI_READ_TIMEOUT = env.float("CIVITAI_READ_TIMEOUT", 30.0)
# 429 and 5xx answers are retried this often, backing off exponentially (Retry-After wins).
CIVITAI_MAX_RETRIES = env.int("CIVITAI_MAX_RETRIES", 4)
CIVITAI_BACKOFF_SECONDS = env.float("CIVITAI_BACKOFF_SECONDS", 1.0)
CIVITAI_BACKOFF_MAX_SECONDS = env.float("CIVITAI_BACKOFF_MAX_SECONDS", 30.0)
# Downloads: how many run at once (over all workers), and how a stalled transfer is noticed.
MOBILESD_MAX_CONCURRENT_DOWNLOADS = env.int("MOBILESD_MAX_CONCURRENT_DOWNLOADS", 2)
MOBILESD_DOWNLOAD_READ_TIMEOUT = env.float("MOBILESD_DOWNLOAD_READ_TIMEOUT", 60.0)
MOBILESD_DOWNLOAD_CHUNK_BYTES = env.int("MOBILESD_DOWNLOAD_CHUNK_BYTES", 1024 * 1024)
# A running download renews this lease; one whose worker died is resumed after it lapses.
MOBILESD_DOWNLOAD_LEASE_SECONDS = env.float("MOBILESD_DOWNLOAD_LEASE_SECONDS", 120.0)
MOBILESD_DOWNLOAD_MAX_RETRIES = env.int("MOBILESD_DOWNLOAD_MAX_RETRIES", 5)
MOBILESD_DOWNLOAD_RETRY_BACKOFF_SECONDS = env.float("MOBILESD_DOWNLOAD_RETRY_BACKOFF_SECONDS", 30.0)
MOBILESD_DOWNLOAD_RETRY_BACKOFF_MAX_SECONDS = env.float(
    "MOBILESD_DOWNLOAD_RETRY_BACKOFF_MAX_SECONDS", 900.0
)
# Free space kept on the target disk beyond the file itself.
MOBILESD_DOWNLOAD_FREE_SPACE_MARGIN_BYTES = env.int(
    "MOBILESD_DOWNLOAD_FREE_SPACE_MARGIN_BYTES", 256 * 1024 * 1024
)
# When set, a server's models_dir must lie inside one of these folders (absolute paths,
# separated by commas or the OS path separator, ':' on Linux): whoever may set a server's
# models folder can then only point downloads into them.
MOBILESD_MODELS_ROOTS = [
    os.path.normpath(root.strip())
    for root in re.split(rf"[,{re.escape(os.pathsep)}]", env.str("MOBILESD_MODELS_ROOTS", ""))
    if root.strip()
]
if any(not os.path.isabs(root) for root in MOBILESD_MODELS_ROOTS):
    raise ImproperlyConfigured("MOBILESD_MODELS_ROOTS must list absolute paths.")
# Temporary files live in this hidden folder under each server's models_dir (the same
# filesystem as the model folders, so the final move is atomic), not under DATA_DIR.
MOBILESD_DOWNLOAD_TMP_DIRNAME = env.str("MOBILESD_DOWNLOAD_TMP_DIRNAME", ".mobilesd-downloads")
MOBILESD_DOWNLOAD_RECONCILE_SECONDS = env.float("MOBILESD_DOWNLOAD_RECONCILE_SECONDS", 30.0)
# POST /api/v1/civitai/image-info: the largest image accepted.
MOBILESD_MAX_IMAGE_UPLOAD_BYTES = env.int("MOBILESD_MAX_IMAGE_UPLOAD_BYTES", 20 * 1024 * 1024)
CELERY_BEAT_SCHEDULE["reconcile-downloads"] = {
    "task": "civitai_app.tasks.reconcile_downloads",
    "schedule": MOBILESD_DOWNLOAD_RECONCILE_SECONDS,
    "options": {"expires": MOBILESD_DOWNLOAD_RECONCILE_SECONDS},
}
# Jobs and downloads both have a `status`: name the downloads' enum in the OpenAPI schema.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    **SPECTACULAR_SETTINGS.get("ENUM_NAME_OVERRIDES", {}),  # type: ignore[dict-item]
    "DownloadStatusEnum": "civitai_app.models.DownloadStatus",
    "JobStatusEnum": "queue_app.models.JobStatus",
    "BatchAxisFieldEnum": "queue_app.batch_serializers.AXIS_CHOICES",
    "ErrorCodeEnum": "core_app.error_codes.ERROR_CODE_CHOICES",
}

# === Observability (issue #17: metrics, logs, error reporting) ===========================
# One block, read with the helpers above, so that the move of the environment reading
# elsewhere can take it whole.
#
# GET /metrics (Prometheus): answered to `Authorization: Bearer <MOBILESD_METRICS_TOKEN>`
# or a staff session; no token set: staff sessions only.
MOBILESD_METRICS_TOKEN = env.str("MOBILESD_METRICS_TOKEN", "")
# Queue wait and run time histograms count the jobs started / finished this long ago at
# most (computed from the database at each scrape).
MOBILESD_METRICS_WINDOW_SECONDS = _positive("MOBILESD_METRICS_WINDOW_SECONDS", 300.0)
# What only a worker sees (dispatch gaps, checkpoint switches) is counted in files in this
# folder, shared by the processes of one machine, and read by /metrics (prometheus-client's
# multiprocess mode, which reads this variable itself when it is first imported: hence it
# is set here, before any app imports it).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", "") or str(DATA_DIR / "metrics")
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR

# LOG_FORMAT=json: one JSON object per record, with the request id, job id and server alias
# where known (core_app.logs). Every request gets an id (X-Request-ID, echoed back).
LOG_FORMAT = env.str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}.")
LOGGING["formatters"]["json"] = {"()": "core_app.logs.JsonLogFormatter"}  # type: ignore[index]
LOGGING["filters"] = {"context": {"()": "core_app.logs.ContextFilter"}}
LOGGING["handlers"]["console"].update(  # type: ignore[index]
    {"formatter": LOG_FORMAT, "filters": ["context"]}
)
# The worker logs through the same handlers as the web (Celery would replace them).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
MIDDLEWARE.insert(0, "core_app.middleware.RequestIdMiddleware")
CORS_EXPOSE_HEADERS = (*CORS_EXPOSE_HEADERS, "x-request-id")

# Unhandled errors of views and tasks go to Sentry when this is set and the `sentry` extra
# is installed (a warning at start-up when it is not).
SENTRY_DSN = env.str("SENTRY_DSN", "")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", "")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", 0.0)
# === End of observability ================================================================

# === Events (issue #14: the event log, streams and feeds) ================================
# Every change of a job, batch, server or download is an event (events_app); events are
# kept this long, then pruned (a reader whose cursor is older must start again).
MOBILESD_EVENTS_RETENTION_SECONDS = _positive("MOBILESD_EVENTS_RETENTION_SECONDS", 7 * 24 * 3600.0)
MOBILESD_EVENTS_PRUNE_SECONDS = _positive("MOBILESD_EVENTS_PRUNE_SECONDS", 3600.0)
CELERY_BEAT_SCHEDULE["prune-events"] = {
    "task": "events_app.tasks.prune_events",
    "schedule": MOBILESD_EVENTS_PRUNE_SECONDS,
    "options": {"expires": MOBILESD_EVENTS_PRUNE_SECONDS},
}
# The stream (GET /api/v1/events): a comment every this many seconds keeps proxies from
# closing an idle stream; a stream token (POST /api/v1/events/token, for EventSource) is good
# this long; a stream that falls this many events behind (a client that stopped reading) is
# ended, to resume with its Last-Event-ID.
MOBILESD_EVENTS_HEARTBEAT_SECONDS = _positive("MOBILESD_EVENTS_HEARTBEAT_SECONDS", 15.0)
MOBILESD_EVENTS_TOKEN_SECONDS = int(_positive("MOBILESD_EVENTS_TOKEN_SECONDS", 3600))
MOBILESD_EVENTS_CLIENT_BUFFER = int(_positive("MOBILESD_EVENTS_CLIENT_BUFFER", 1000))
# How each web process learns of new events: on PostgreSQL LISTEN/NOTIFY (turn it off behind
# a pooler that cannot LISTEN, e.g. PgBouncer in transaction mode), plus a safety poll that
# covers a lost notification; on SQLite (or without NOTIFY) a poll while a stream is open.
MOBILESD_EVENTS_NOTIFY = env.bool("MOBILESD_EVENTS_NOTIFY", True)
MOBILESD_EVENTS_SAFETY_POLL_SECONDS = _positive("MOBILESD_EVENTS_SAFETY_POLL_SECONDS", 2.0)
MOBILESD_EVENTS_POLL_SECONDS = _positive("MOBILESD_EVENTS_POLL_SECONDS", 0.25)
# === End of events =======================================================================


# === Notifications (issue #15: webhooks, push, signed links) =============================
# Where webhooks, per-job callback URLs and push targets may be delivered
# (integrations.destinations): comma-separated CIDRs; by default the private LAN ranges.
# Link-local and metadata addresses never; loopback only when a listed network is loopback.
MOBILESD_WEBHOOK_ALLOWED_NETWORKS = _networks(
    "MOBILESD_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
)


def _delays(name: str, default: str) -> tuple[float, ...]:
    """Seconds between tries (of a webhook delivery, of a push notification),
    comma-separated, fractions allowed, each under a week: N delays, N+1 tries."""
    delays = []
    for value in _list(name) or default.split(","):
        try:
            delay = float(value)
        except ValueError:
            delay = -1.0
        if not 0 <= delay < 7 * 24 * 3600:
            raise ImproperlyConfigured(
                f'Environment variable "{name}" invalid: {value!r} is not a number of seconds '
                f"under a week (e.g. {default})."
            )
        delays.append(delay)
    return tuple(delays)


# --- Webhooks (notifications_app.webhook_*) ---
MOBILESD_WEBHOOK_RETRY_SECONDS = _delays("MOBILESD_WEBHOOK_RETRY_SECONDS", "30,120,600,2700")
MOBILESD_WEBHOOK_CONNECT_TIMEOUT = _positive("MOBILESD_WEBHOOK_CONNECT_TIMEOUT", 5.0)
MOBILESD_WEBHOOK_READ_TIMEOUT = _positive("MOBILESD_WEBHOOK_READ_TIMEOUT", 15.0)
# A delivery being sent holds this lease; one whose worker died is sent again once it
# lapses. Longer than one try can take (connect + read timeouts, and a margin).
MOBILESD_WEBHOOK_LEASE_SECONDS = _positive("MOBILESD_WEBHOOK_LEASE_SECONDS", 60.0)
if (
    MOBILESD_WEBHOOK_LEASE_SECONDS
    <= MOBILESD_WEBHOOK_CONNECT_TIMEOUT + MOBILESD_WEBHOOK_READ_TIMEOUT
):
    raise ImproperlyConfigured(
        'Environment variable "MOBILESD_WEBHOOK_LEASE_SECONDS" invalid: it must be longer '
        "than MOBILESD_WEBHOOK_CONNECT_TIMEOUT + MOBILESD_WEBHOOK_READ_TIMEOUT."
    )
# An endpoint whose every delivery has failed for this long is disabled (its owner told).
MOBILESD_WEBHOOK_DISABLE_AFTER_SECONDS = _positive(
    "MOBILESD_WEBHOOK_DISABLE_AFTER_SECONDS", 3 * 24 * 3600.0
)
# The safety poll of the fan-out and of deliveries whose task was lost (a worker's LISTEN
# thread hands new events on in moments on PostgreSQL; on SQLite this poll is the fan-out).
MOBILESD_NOTIFY_POLL_SECONDS = _positive("MOBILESD_NOTIFY_POLL_SECONDS", 2.0)
CELERY_BEAT_SCHEDULE["notifications-poll"] = {
    "task": "notifications_app.tasks.notifications_poll",
    "schedule": MOBILESD_NOTIFY_POLL_SECONDS,
    "options": {"expires": MOBILESD_NOTIFY_POLL_SECONDS},
}

# --- Push notifications (notifications_app.push: Apprise URLs) ----------------------------
# A send (connect, read, and the whole of it) gives up after this long.
MOBILESD_PUSH_TIMEOUT_SECONDS = _positive("MOBILESD_PUSH_TIMEOUT_SECONDS", 10.0)
# A failed send is tried again after each of these delays (seconds), then recorded as
# failed on its target: 4 tries over about 12 minutes by default.
MOBILESD_PUSH_RETRY_SECONDS = _delays("MOBILESD_PUSH_RETRY_SECONDS", "30,120,600")
# A worker sending a notification holds it this long; one killed mid-send leaves it to be
# sent again once this lapses, by the recovery task, which runs this often (and also sends
# the retries whose time has come, should their message have been lost).
MOBILESD_PUSH_LEASE_SECONDS = _positive("MOBILESD_PUSH_LEASE_SECONDS", 60.0)
MOBILESD_PUSH_RECOVERY_SECONDS = _positive("MOBILESD_PUSH_RECOVERY_SECONDS", 30.0)
CELERY_BEAT_SCHEDULE["recover-push"] = {
    "task": "notifications_app.push_tasks.recover_push",
    "schedule": MOBILESD_PUSH_RECOVERY_SECONDS,
    "options": {"expires": MOBILESD_PUSH_RECOVERY_SECONDS},
}
# Apprise logs through its own logger, with services' URLs (and so tokens) in its lines:
# kept out of MobileSD's logs (a failed send's warnings are recorded, stripped of URLs).
LOGGING["handlers"]["discard"] = {"class": "logging.NullHandler"}  # type: ignore[index]
LOGGING["loggers"]["apprise"] = {  # type: ignore[index]
    "handlers": ["discard"],
    "propagate": False,
    "level": "WARNING",
}
# urllib3 (under requests, which Apprise's plugins use) logs each request's path at DEBUG:
# Telegram's, for one, holds the bot token.
LOGGING["loggers"]["urllib3"] = {"level": "INFO"}  # type: ignore[index]
# The push targets' `events` choices by a name of their own (webhooks have `events` too).
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    **SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"],  # type: ignore[dict-item]
    "PushEventTypeEnum": "notifications_app.models.PUSH_EVENT_TYPES",
}
# --- End of push notifications ------------------------------------------------------------
# === End of notifications ================================================================

# === Routine tasks' log lines =============================================================
# Celery's INFO lines for each run of a periodic task that runs more often than once a
# minute (beat's notifications poll every 2 s, the lease recovery, ...) are left out of the
# log (core_app.logs.RoutineTaskFilter); their warnings and errors are kept, and LOG_LEVEL=
# DEBUG keeps everything.
LOGGING["filters"]["routine_tasks"] = {  # type: ignore[index]
    "()": "core_app.logs.RoutineTaskFilter",
    "tasks": []
    if LOG_LEVEL == "DEBUG"
    else sorted(
        str(entry["task"])
        for entry in CELERY_BEAT_SCHEDULE.values()
        if isinstance(entry["schedule"], int | float) and entry["schedule"] < 60
    ),
}
LOGGING["handlers"]["console"]["filters"].append("routine_tasks")  # type: ignore[index]
