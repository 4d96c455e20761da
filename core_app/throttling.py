"""Request throttling on atomic counters: requests per API key, and failed sign-ins (API
keys and the admin's login) per client address.

Each limit counts hits in fixed windows of the cache (`window_hit`): one counter per key
and window, incremented atomically (Redis: INCR and EXPIRE in one transaction; the
per-process memory cache of the embedded default: its own lock), so concurrent requests
cannot read the same count and all pass, as a read-append-write history did.

When the cache is unreachable the limits fail open: the request is served (a phone must
be able to submit while PostgreSQL is up), a warning is logged at most once a minute, and
/api/v1/health reports the cache as degraded.
"""

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from core_app.errors import MobileSDError
from core_app.models import ApiKey

if TYPE_CHECKING:
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# A window's counter outlives its window by this much, so that it cannot expire (and be
# recreated without a timeout) between the two steps of a non-Redis increment.
_EXPIRY_MARGIN_SECONDS = 5
# The "cache unreachable" warning is logged at most this often per process.
WARNING_INTERVAL_SECONDS = 60.0


class CacheUnavailable(Exception):
    """The cache that holds the counters could not be reached."""


@dataclass(frozen=True)
class WindowCount:
    count: int  # hits in the current window, this one included
    resets_in: float  # seconds until the window ends


def _window(window_seconds: int, now: float) -> tuple[int, float]:
    index = int(now // window_seconds)
    return index, (index + 1) * window_seconds - now


def _counter_key(key: str, index: int) -> str:
    return f"mobilesd:count:{key}:{index}"


def window_hit(key: str, window_seconds: int, *, now: float | None = None) -> WindowCount:
    """Count one hit on `key` in the current window of `window_seconds`; atomic across
    threads and (with Redis) processes. Raises `CacheUnavailable`."""
    index, resets_in = _window(window_seconds, time.time() if now is None else now)
    name = _counter_key(key, index)
    ttl = window_seconds + _EXPIRY_MARGIN_SECONDS
    backend = caches["default"]
    try:
        if isinstance(backend, RedisCache):
            count = _redis_hit(backend, name, ttl)
        else:
            count = _cache_hit(backend, name, ttl)
    except Exception as exc:  # redis-py and socket errors: the cache is down
        raise CacheUnavailable(str(exc) or type(exc).__name__) from exc
    return WindowCount(count, resets_in)


def window_count(key: str, window_seconds: int, *, now: float | None = None) -> WindowCount:
    """The hits on `key` so far in the current window (none counted). Raises
    `CacheUnavailable`."""
    index, resets_in = _window(window_seconds, time.time() if now is None else now)
    try:
        value = caches["default"].get(_counter_key(key, index), 0)
    except Exception as exc:
        raise CacheUnavailable(str(exc) or type(exc).__name__) from exc
    return WindowCount(int(value or 0), resets_in)


def _redis_hit(backend: RedisCache, name: str, ttl: int) -> int:
    full_key = backend.make_and_validate_key(name)
    # Django's RedisCache.incr() checks and increments in two round trips; one
    # MULTI/EXEC makes the count and its expiry one step.
    client: Any = backend._cache.get_client(full_key, write=True)
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(full_key)
        pipe.expire(full_key, ttl, nx=True)
        count, _ = pipe.execute()
    return int(count)


def _cache_hit(backend: BaseCache, name: str, ttl: int) -> int:
    # add() is atomic, and locmem's incr() holds its lock.
    backend.add(name, 0, ttl)
    try:
        return int(backend.incr(name))
    except ValueError:  # evicted between the two calls
        backend.add(name, 0, ttl)
        return int(backend.incr(name))


class _CacheHealth:
    """What this process last saw of the cache, for the rate-limited warning."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_warning = float("-inf")
        self.suppressed = 0

    def failed(self, what: str, exc: CacheUnavailable) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last_warning < WARNING_INTERVAL_SECONDS:
                self.suppressed += 1
                return
            suppressed, self.suppressed = self.suppressed, 0
            self._last_warning = now
        logger.warning(
            "The cache is unreachable (%s): %s is not enforced, requests are served "
            "(%d similar failures since the last warning).",
            exc,
            what,
            suppressed,
        )

    def reset(self) -> None:
        with self._lock:
            self._last_warning = float("-inf")
            self.suppressed = 0


cache_health = _CacheHealth()


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Limits requests per API key (per client address when there is no key), in fixed
    windows of the rate's period."""

    scope = "api_key"

    def get_cache_key(self, request: Request, view: "APIView") -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"key-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            # Anonymous mode: per connecting address, as failed attempts are (DRF's own
            # get_ident would take X-Forwarded-For, which the client chooses).
            ident = f"ip-{client_address(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Request, view: "APIView") -> bool:
        limit, period = self.parse_rate(self.rate)
        if limit is None or period is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        try:
            hit = window_hit(key, period)
        except CacheUnavailable as exc:
            cache_health.failed("the per-key rate limit", exc)
            return True
        self._resets_in = hit.resets_in
        return hit.count <= limit

    def wait(self) -> float | None:
        return getattr(self, "_resets_in", None)


class TooManyFailedAttempts(MobileSDError):
    status_code = 429
    default_code = "too_many_failed_attempts"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            "Too many failed sign-in attempts from this address; try again in "
            f"{self.retry_after} seconds."
        )
        self.headers = {"Retry-After": str(self.retry_after)}


def client_address(request: HttpRequest) -> str:
    """The address failed attempts (and anonymous requests) are counted for.

    The connection's peer, unless it is one of MOBILESD_TRUSTED_PROXIES: then the client
    that the proxies report. X-Forwarded-For is read from its right, where each proxy
    appends the address it was connected from; the first hop that is not a trusted proxy
    is the client. What lies left of it the client wrote itself (and could change on every
    attempt), so it is never read. A hop that is not an address ends the walk at the last
    address a trusted proxy vouched for.
    """
    peer = str(request.META.get("REMOTE_ADDR") or "unknown")
    proxies = settings.MOBILESD_TRUSTED_PROXIES
    if not proxies:
        if "HTTP_X_FORWARDED_FOR" in request.META:
            _forwarded_without_proxies.seen(peer)
        return peer
    if not _is_proxy(_ip(peer), proxies):
        return peer
    address = peer
    hops = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break
        address = str(ip)
        if not _is_proxy(ip, proxies):
            break
    return address


class _ForwardedWithoutProxies:
    """A warning, once per process, that requests come through a proxy no setting names."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.warned = False

    def seen(self, peer: str) -> None:
        if self.warned:
            return
        with self._lock:
            if self.warned:
                return
            self.warned = True
        logger.warning(
            "A request from %s came with X-Forwarded-For, and MOBILESD_TRUSTED_PROXIES is "
            "not set: if %s is your reverse proxy, name it there, or every client behind it "
            "shares one count of failed sign-ins (and of anonymous requests).",
            peer,
            peer,
        )


_forwarded_without_proxies = _ForwardedWithoutProxies()

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    """The address in an X-Forwarded-For hop or REMOTE_ADDR (`a.b.c.d`, `a.b.c.d:port`,
    `v6`, `[v6]` or `[v6]:port`); None if it is none."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket: ::ffff:a.b.c.d.
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def _is_proxy(ip: IPAddress | None, proxies: Iterable[Any]) -> bool:
    return ip is not None and any(ip in network for network in proxies)


class FailedAttempts:
    """Failed sign-ins of one kind (`"api_key"`, `"admin"`) per client address: after
    MOBILESD_FAILED_ATTEMPTS_LIMIT failures within MOBILESD_FAILED_ATTEMPTS_WINDOW
    seconds, the address is refused until the window ends."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _key(self, address: str) -> str:
        return f"failed-{self.kind}:{address}"

    def check(self, address: str) -> None:
        """Raise `TooManyFailedAttempts` if `address` is over the limit; fails open."""
        try:
            seen = window_count(self._key(address), settings.MOBILESD_FAILED_ATTEMPTS_WINDOW)
        except CacheUnavailable as exc:
            cache_health.failed("the failed sign-in limit", exc)
            return
        if seen.count >= settings.MOBILESD_FAILED_ATTEMPTS_LIMIT:
            raise TooManyFailedAttempts(seen.resets_in)

    def record(self, address: str) -> None:
        """Count one failed attempt from `address`."""
        try:
            window_hit(self._key(address), settings.MOBILESD_FAILED_ATTEMPTS_WINDOW)
        except CacheUnavailable as exc:
            cache_health.failed("the failed sign-in limit", exc)


failed_api_keys = FailedAttempts("api_key")
failed_admin_logins = FailedAttempts("admin")
