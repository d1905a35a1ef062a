"""``indexer daemon``'s start-up checks: every mistake found before the daemon logs, writes or
binds anything, as one line naming the cause and the fix.

Rules this module keeps:

- Each check raises ``CliError`` (one line on stderr, exit 2); the message names the setting as
  the user gave it (``--find-addr``, or ``server.find_addr in FILE``), the value, and the fix.
- HTTP addresses are ``HOST:PORT`` with a port 0 to 65535 (0: any free port); an IPv6 host is in
  brackets (``[::1]:3000``); an empty host is every interface.  The p2p address is exactly
  ``/ip4/<address>/tcp/<port>`` or ``/ip6/<address>/tcp/<port>``: what py-libp2p's TCP transport
  listens on.
- ``check_ports`` binds every fixed port (not 0) as the servers will, all at once, then closes
  them: a port another process (or another of this daemon's servers) holds is refused before
  the data directory is touched.  The p2p port is bound WITHOUT ``SO_REUSEPORT``, so a second
  daemon cannot share the first one's libp2p port (py-libp2p sets that option on its own
  listeners, and Linux lets two such sockets share a port).  This is a check, not a
  reservation: a port taken between it and the real bind is still reported (``indexer.cli
  .daemon``), after the first log lines.
- ``check_data_dir_path`` (before the config file under it is read) refuses a data directory
  that is a file or lies under one; ``check_not_in_use`` (before the ports, so ``make run`` twice
  names the real cause) refuses a directory whose database another daemon holds (LevelDB's
  lock), naming both fixes: the database is only opened when it exists, never created here;
  ``check_data_dir`` makes the data directory (and its parents) or says why it cannot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from indexer.errors import CliError

__all__ = [
    "check_data_dir",
    "check_data_dir_path",
    "check_http_addr",
    "check_not_in_use",
    "check_p2p_addr",
    "check_ports",
]

_P2P_FORM = "/ip4/HOST/tcp/PORT or /ip6/HOST/tcp/PORT (e.g. /ip4/127.0.0.1/tcp/3003)"


def check_http_addr(where: str, addr: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), or a ``CliError`` naming ``where`` and the fix."""
    host, sep, port_text = addr.rpartition(":")
    example = "e.g. 127.0.0.1:3000, [::1]:3000, or :3000 for every interface"
    if not sep or not port_text.isdigit():
        raise CliError(f"{where} {addr!r} is not HOST:PORT ({example})")
    port = int(port_text)
    if port > 65535:
        raise CliError(f"{where} {addr!r}: port {port} is not 0 to 65535 (0: any free port)")
    if host.startswith("[") != host.endswith("]"):
        raise CliError(f"{where} {addr!r} is not HOST:PORT ({example})")
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise CliError(
                f"{where} {addr!r}: {host!r} in brackets is not an IPv6 address"
            ) from None
    elif ":" in host:
        raise CliError(f"{where} {addr!r}: an IPv6 host goes in brackets, e.g. [{host}]:{port}")
    return host, port


def check_p2p_addr(where: str, addr: str) -> tuple[str, int]:
    """``/ip4|ip6/<address>/tcp/<port>`` -> (address, port), or a ``CliError`` with the fix."""
    import multiaddr

    fix = f"give {_P2P_FORM}, or --no-p2p"
    try:
        items = list(multiaddr.Multiaddr(addr).items())
    except (multiaddr.exceptions.Error, ValueError):  # py-multiaddr wraps its codecs' errors
        raise CliError(f"{where} {addr!r} is not a multiaddr: {fix}") from None
    names = [p.name for p, _ in items]
    if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
        raise CliError(f"{where} {addr!r} is not a TCP address libp2p can listen on: {fix}")
    return str(items[0][1]), int(str(items[1][1]))


def check_ports(addrs: Mapping[str, tuple[str, str, int]], *, p2p: str = "p2p") -> None:
    """Bind every fixed port of ``addrs`` (server -> (addr as given, host, port)) at once.

    The fix names the flag of the server whose port is taken.
    """
    with contextlib.ExitStack() as held:
        for server, (addr, host, port) in addrs.items():
            if port == 0:
                continue
            try:
                for sock in _bind(host, port):
                    held.callback(sock.close)
            except OSError as exc:
                flag = f"--{server}-addr"
                fix = f"stop what listens there, or give {flag} another port"
                if server == p2p:
                    fix += ", or --no-p2p"
                if exc.errno != errno.EADDRINUSE:
                    fix = f"give {flag} an address of this machine"
                why = exc.strerror or str(exc)
                raise CliError(f"cannot listen on {addr} ({server}): {why} ({fix})") from None


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to, as trio's listeners bind them,
    but never with ``SO_REUSEPORT``."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}: {exc.strerror}") from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen()
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def check_data_dir_path(data_dir: Path) -> None:
    """The data directory is a directory, or could be made: nothing is made or opened here."""
    fix = "give --data-dir a directory you can write"
    if data_dir.exists() and not data_dir.is_dir():
        raise CliError(f"the data directory {data_dir} is not a directory ({fix})")
    ancestor = data_dir
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor != data_dir and not ancestor.is_dir():
        raise CliError(f"cannot create the data directory {data_dir}: {ancestor} is a file ({fix})")


def check_data_dir(data_dir: Path, *, key_file: str) -> None:
    """The data directory exists (made here) and is usable."""
    fix = "give --data-dir a directory you can write"
    check_data_dir_path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise CliError(f"cannot create the data directory {data_dir}: {why} ({fix})") from None
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise CliError(f"cannot write the data directory {data_dir}: permission denied ({fix})")
    key = data_dir / key_file
    if key.exists() and not os.access(key, os.R_OK):
        raise CliError(f"cannot read {key}: permission denied (make it readable by this user)")


def check_not_in_use(data_dir: Path, *, db_dir: str) -> None:
    """No other daemon holds the data directory's database; nothing made, nothing opened.

    LevelDB locks ``<db>/LOCK`` with a POSIX record lock (``fcntl`` ``F_SETLK``): probing that
    lock answers without opening the database, which would replay its log (seconds, with much
    staged) only for the daemon to replay it again."""
    lock = data_dir / db_dir / "LOCK"
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return  # no database yet (or no lock file): the daemon makes it, or says why it cannot
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise CliError(
            f"another indexer daemon is using {data_dir} (stop it, or give --data-dir "
            "another directory)"
        ) from None
    finally:
        os.close(fd)  # releases the probe's lock
