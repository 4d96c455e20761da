"""gunicorn's worker for the ASGI web tier (`gunicorn mobilesd.asgi -k mobilesd.workers.
UvicornWorker`, the Procfile's `web`): uvicorn-worker's, with two differences.

- The peer address stays the connection's. uvicorn rewrites the client address from
  `X-Forwarded-For` for the hosts of `--forwarded-allow-ips`, and with `'*'` any client could
  then choose the address its failed sign-ins are counted for. As gunicorn's own workers
  do, only the scheme (`X-Forwarded-Proto`) is taken from a trusted proxy, so that Django
  knows a request came over TLS: from MOBILESD_TRUSTED_PROXIES when set, which
  core_app.throttling also reads X-Forwarded-For for, else from `--forwarded-allow-ips`.
- At shutdown the event streams end at once with a last message (a client reconnects, to
  another worker), instead of holding the worker until gunicorn's graceful timeout kills it.

No Django at import: gunicorn's master imports this module to find the class.
"""

import ipaddress
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as BaseUvicornWorker

Scope = dict[str, Any]
ASGIApp = Any


class SchemeFromProxy:
    """ASGI middleware: the request's scheme from `X-Forwarded-Proto` when the peer is one of
    the trusted proxies (`*`: any); the client address is left as it is."""

    def __init__(self, app: ASGIApp, trusted: str | list[str]) -> None:
        self.app = app
        names = trusted.split(",") if isinstance(trusted, str) else list(trusted)
        self.any = False
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for name in (n.strip() for n in names):
            if not name:
                continue
            if name == "*":
                self.any = True
            elif "/" in name:
                self.networks.append(ipaddress.ip_network(name, strict=False))
            else:
                self.hosts.add(name)

    def trusts(self, host: str | None) -> bool:
        if self.any:
            return True
        if host is None:
            return False
        if host in self.hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if self.trusts(client[0] if client else None):
                for name, value in scope.get("headers", []):
                    if name == b"x-forwarded-proto":
                        proto = value.decode("latin1").strip().lower()
                        if proto in ("http", "https"):
                            scope["scheme"] = proto
        await self.app(scope, receive, send)


class _Server(Server):
    async def shutdown(self, sockets: Any = None) -> None:
        # Django is set up by now (the app is loaded); the streams' last message goes out
        # before uvicorn waits for the connections to close.
        from events_app.stream import events_streams_close

        await events_streams_close("shutdown")
        await super().shutdown(sockets)


def _trusted_proxies(cfg: Any) -> str | list[str]:
    """MOBILESD_TRUSTED_PROXIES when set (the proxies failed sign-ins are counted behind),
    else gunicorn's `--forwarded-allow-ips`. Read once the app is loaded: Django's settings
    are then set up in this worker process."""
    from django.conf import settings

    proxies = settings.MOBILESD_TRUSTED_PROXIES
    return [str(network) for network in proxies] if proxies else cfg.forwarded_allow_ips


class UvicornWorker(BaseUvicornWorker):
    # Django's ASGI handler serves HTTP only: no lifespan protocol to try.
    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "proxy_headers": False, "lifespan": "off"}

    async def _serve(self) -> None:
        self.config.app = SchemeFromProxy(self.wsgi, _trusted_proxies(self.cfg))
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
