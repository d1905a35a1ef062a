"""What a daemon exposes, checked before it binds anything: the admin token, non-loopback binds.

Rules this module keeps:

- The admin token comes from ``$INDEXER_ADMIN_TOKEN``, else from the file ``[server]
  admin_token_file`` names (relative to the data directory; its content, surrounding whitespace
  stripped), never from the config file itself, so the config can be shared and committed.  No
  token at all is ``""``.  A configured file that is missing, unreadable or empty, or a token that
  is not 16 to 1024 characters of RFC 6750's ``b64token`` alphabet (``A-Z a-z 0-9 - . _ ~ + /``,
  then ``=`` padding), is a ``ConfigError``: a daemon never runs with a token other than the one
  its operator meant.  A token file readable by group or others is logged as a warning.
- Loopback is a host that is an IP address in ``127.0.0.0/8`` or ``::1``, or the name
  ``localhost``; anything else (``0.0.0.0``, ``::``, an empty host, any other name or address) is
  exposed.  The p2p address is a multiaddr: its first ``/ip4``, ``/ip6`` or ``/dns*`` value counts.
- ``check_exposure`` raises ``ConfigError`` (one line: the cause and the fix) when the admin API
  would listen beyond loopback with no token, and otherwise returns one ``Exposure`` per server
  that listens beyond loopback; ``warn_exposed`` logs each as a structured warning
  (``server listens beyond loopback``: server, addr, on, exposes), which the CLI prints on stderr.
  The daemon calls it before it opens the database or binds a port.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from indexer.config import Config, ConfigError

__all__ = [
    "ADMIN_TOKEN_ENV",
    "Exposure",
    "admin_token",
    "check_exposure",
    "is_loopback_host",
    "valid_token",
    "warn_exposed",
]

ADMIN_TOKEN_ENV = "INDEXER_ADMIN_TOKEN"
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MIN_TOKEN, _MAX_TOKEN = 16, 1024
log = structlog.get_logger("security")

_EXPOSES = {
    "find": "the find API and delegated routing: anyone who reaches it reads the whole index "
    "(providers, their addresses, what they provide)",
    "ingest": "announce intake: anyone who reaches it can make the indexer sync, and so connect "
    "to, any address it announces",
    "admin": "the admin API (syncs, allow/block, staging, metrics), behind the admin token",
    "p2p": "the libp2p host: gossipsub announces from any peer",
}


@dataclass(frozen=True, slots=True)
class Exposure:
    """A server that listens beyond loopback, and what that exposes."""

    server: str  # find, ingest, admin, p2p
    addr: str
    exposes: str

    @property
    def everywhere(self) -> bool:
        """Bound to every interface (``0.0.0.0``, ``::`` or an empty host)."""
        return _host(self.server, self.addr) in ("", "0.0.0.0", "::")


def valid_token(token: str) -> bool:
    """A token the admin API accepts and an ``Authorization`` header can carry unchanged."""
    return _MIN_TOKEN <= len(token) <= _MAX_TOKEN and _TOKEN.fullmatch(token) is not None


def _checked(token: str, where: str) -> str:
    if not valid_token(token):
        raise ConfigError(
            f"{where}: the admin token must be {_MIN_TOKEN} to {_MAX_TOKEN} characters of "
            "A-Z a-z 0-9 - . _ ~ + / (then = padding); e.g. `openssl rand -hex 32`"
        )
    return token


def admin_token(config: Config, environ: Mapping[str, str], data_dir: Path) -> str:
    """The admin token (``""``: none), from the environment or ``admin_token_file``."""
    if value := environ.get(ADMIN_TOKEN_ENV, ""):
        return _checked(value, ADMIN_TOKEN_ENV)
    if not config.server.admin_token_file:
        return ""
    path = data_dir / Path(config.server.admin_token_file).expanduser()
    try:
        text = path.read_text(encoding="ascii").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"server.admin_token_file: cannot read {path}: {exc}") from None
    if not text:
        raise ConfigError(f"server.admin_token_file: {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("admin token file is readable by others: chmod 600 it", path=str(path))
    return _checked(text, f"server.admin_token_file {path}")


def _host(server: str, addr: str) -> str:
    if server != "p2p":
        return addr.rpartition(":")[0].strip("[]")
    parts = addr.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in ("ip4", "ip6", "dns", "dns4", "dns6"):
            return parts[i + 1]
    return ""


def is_loopback_host(host: str) -> bool:
    """Does binding ``host`` keep a server on this machine?"""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", a name other than localhost: assume it is reachable


def check_exposure(config: Config, token: str) -> list[Exposure]:
    """The servers listening beyond loopback; ``ConfigError`` for an admin API with no token."""
    server = config.server
    addrs = {"find": server.find_addr, "ingest": server.ingest_addr, "admin": server.admin_addr}
    if server.p2p_addr:
        addrs["p2p"] = server.p2p_addr
    exposes = dict(_EXPOSES)
    if not config.ingest.refuse_private_addrs:
        exposes["ingest"] += " (refuse_private_addrs is off: internal ones too)"
    exposed = [
        Exposure(server, addr, exposes[server])
        for server, addr in addrs.items()
        if not is_loopback_host(_host(server, addr))
    ]
    if not token and any(e.server == "admin" for e in exposed):
        raise ConfigError(
            f"admin_addr {server.admin_addr} is not loopback and no admin token is set: set "
            f"{ADMIN_TOKEN_ENV} (or [server] admin_token_file), or bind the admin API to "
            "127.0.0.1"
        )
    return exposed


def warn_exposed(config: Config, token: str) -> list[Exposure]:
    """``check_exposure``, each exposure logged as a warning."""
    exposed = check_exposure(config, token)
    for e in exposed:
        on = "every interface" if e.everywhere else "a non-loopback address"
        log.warning(
            "server listens beyond loopback", server=e.server, addr=e.addr, on=on,
            exposes=e.exposes,
        )  # fmt: skip
    return exposed
