"""What the served application answers, whatever a request's Origin says.

Host: a page or websocket request is answered only for a host the server is served under: its bound
address, the loopback names, this machine's own names and addresses when bound to all interfaces,
and those given with --allow-host (or --allow-websocket-origin). Anything else gets 403. Bokeh checks
a websocket's Origin only against its Host, so a DNS-rebinding page (an attacker's name resolved to
127.0.0.1, Host and Origin both that name) passed; the Host check refuses it.

Component resources: Panel serves files of a component under /components/<module>/<class>/..., and
imports <module> to find it, so a URL could import any installed module. Only modules this process
has already imported are served.
"""
from __future__ import annotations

import socket
import sys

from tornado.routing import AnyMatches, Matcher, Rule
from tornado.web import HTTPError, RequestHandler

LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
ALL_INTERFACES = {"0.0.0.0", "::", ""}


def host_name(host: str) -> str:
    """The name of a Host header (or HOST[:PORT] argument), without its port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:5006
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def served_hosts(address: str, extra=()) -> set[str]:
    """The host names requests may name: the bound address, loopback, `extra` (HOST[:PORT] each) and,
    bound to all interfaces, this machine's own names and addresses."""
    hosts = set(LOOPBACK) | {host_name(h) for h in extra if h}
    if address in ALL_INTERFACES:
        names = {socket.gethostname(), socket.getfqdn()}
        hosts |= {n.lower() for n in names}
        for name in names:
            try:
                hosts |= {info[4][0] for info in socket.getaddrinfo(name, None)}
            except OSError:
                pass
    else:
        hosts.add(host_name(address))
    return hosts


class _HostAllowed(Matcher):
    def __init__(self, hosts: set[str]):
        self.hosts = hosts

    def match(self, request):
        return {} if host_name(request.host or "") in self.hosts else None


class _WrongHost(RequestHandler):
    def prepare(self):
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"403: this lensframe server does not answer for the host {self.request.host!r}; "
                    "its operator can allow it with --allow-host\n")


def restrict(app, hosts: set[str]) -> None:
    """Route only requests for `hosts` to the tornado application `app` (Bokeh's), others to a 403;
    and serve component resources of already imported modules only."""
    from panel.io.server import ComponentResourceHandler

    class _ImportedModulesOnly(ComponentResourceHandler):
        def parse_url_path(self, path: str) -> str:
            if path.split("/", 1)[0] not in sys.modules:
                raise HTTPError(404, "Module not found")
            return super().parse_url_path(path)

    for rule in app.wildcard_router.rules:
        target = rule.target
        if isinstance(target, type) and issubclass(target, ComponentResourceHandler):
            rule.target = _ImportedModulesOnly
    app.default_router.rules = [Rule(_HostAllowed(hosts), app.wildcard_router), Rule(AnyMatches(), _WrongHost)]
