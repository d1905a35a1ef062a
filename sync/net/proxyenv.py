"""Which proxy a request goes through, from the environment, as Go's ``net/http`` decides it.

Rules this module keeps (Go's ``golang.org/x/net/http/httpproxy``, which ``http.Client`` uses):

- ``HTTP_PROXY`` is for ``http`` URLs, ``HTTPS_PROXY`` for ``https`` URLs (no fallback from one
  to the other); the upper-case name wins over the lower-case one, an empty value is unset.
  ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD`` is set (a CGI environment: "httpoxy").
- A proxy value without a scheme is ``http://``; ``http`` and ``https`` proxies are supported
  (the port defaults to 80 and 443), ``user:password@`` is sent as Basic
  ``Proxy-Authorization``.  Any other scheme (socks5, ...) or a value that does not parse is
  ``FetchFailed`` when a request would use it: a misconfigured proxy is never bypassed silently.
- Never proxied: ``localhost`` and loopback IPs, and hosts ``NO_PROXY`` matches: a
  comma-separated list of ``*`` (everything), IPs and CIDRs, and domains (``example.com``
  matches it and its subdomains, ``.example.com`` and ``*.example.com`` only subdomains), each
  with an optional ``:port``.  Host names compare case-insensitively.
- The environment is read once, by ``ProxyEnv.from_environ`` (the client reads it when built).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from sync.errors import FetchFailed

__all__ = ["Proxy", "ProxyEnv"]

_DEFAULT_PORTS = {"http": 80, "https": 443}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Proxy:
    """One proxy: ``scheme`` (http or https), ``host``, ``port``, and Basic credentials."""

    scheme: str
    host: str
    port: int
    auth: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class _Bypass:
    """One ``NO_PROXY`` entry: an IP network, or a domain suffix (``.example.com``)."""

    network: IPNetwork | None = None
    suffix: str = ""
    match_host: bool = False  # "example.com" also matches "example.com" itself
    port: int | None = None

    def matches(self, host: str, ip: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return ip is not None and ip.version == self.network.version and ip in self.network
        return host.endswith(self.suffix) or (self.match_host and host == self.suffix[1:])


@dataclass(frozen=True, slots=True)
class ProxyEnv:
    """The proxy settings; the default (no proxies) is what ``from_environ({})`` gives."""

    http: str = ""
    https: str = ""
    bypass_all: bool = False
    bypass: tuple[_Bypass, ...] = field(default=())

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ProxyEnv:
        env = os.environ if environ is None else environ

        def first(*names: str) -> str:
            return next((env[n] for n in names if env.get(n)), "")

        http = "" if env.get("REQUEST_METHOD") else first("HTTP_PROXY", "http_proxy")
        https = first("HTTPS_PROXY", "https_proxy")
        entries = [e.strip().lower() for e in first("NO_PROXY", "no_proxy").split(",")]
        if "*" in entries:
            return cls(http, https, bypass_all=True)
        return cls(http, https, bypass=tuple(b for e in entries if (b := _parse_bypass(e))))

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for a request to ``scheme://host:port``, or None to connect directly."""
        value = self.https if scheme == "https" else self.http
        if not value or self.bypass_all:
            return None
        host = host.lower().rstrip(".")
        ip = _address(host)
        if host == "localhost" or (ip is not None and ip.is_loopback):
            return None
        if any(b.matches(host, ip, port) for b in self.bypass):
            return None
        return _parse_proxy(value)


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _parse_bypass(entry: str) -> _Bypass | None:
    if not entry:
        return None
    try:
        return _Bypass(network=ipaddress.ip_network(entry, strict=False))  # a CIDR or an IP
    except ValueError:
        pass
    host, port = entry, None
    if entry.startswith("["):  # [IPv6] or [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    elif entry.count(":") == 1 and entry.partition(":")[2].isdigit():  # host:port
        host, port = entry.partition(":")[0], int(entry.partition(":")[2])
    if not host:
        return None
    if (ip := _address(host)) is not None:
        return _Bypass(network=ipaddress.ip_network(ip), port=port)
    if host.startswith("*."):
        host = host[1:]
    return _Bypass(suffix=host if host.startswith(".") else "." + host,
                   match_host=not host.startswith("."), port=port)  # fmt: skip


def _parse_proxy(value: str) -> Proxy:
    try:
        parts = urlsplit(value)
        if not parts.scheme or not parts.hostname:
            parts = urlsplit("http://" + value)
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in _DEFAULT_PORTS or not host:
            raise ValueError(f"unsupported proxy scheme {scheme!r}")
        port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port
    except ValueError as exc:
        raise FetchFailed(f"proxy {value!r} from the environment: {exc}") from None
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    return Proxy(scheme, host, port, auth)
