"""``indexer find``, ``indexer providers``, and the HTTP client every daemon-facing command uses.

Rules this module keeps:

- The find API is at ``--find-url``, else ``$INDEXER_FIND_URL``, else ``http://127.0.0.1:3000``;
  requests ask for JSON and time out after ``TIMEOUT`` seconds.
- ``find`` accepts a CID (asked as ``/cid/{cid}``) or a hex or base58 multihash (asked as
  ``/multihash/{base58}``); anything else is refused locally, before any request.
- ``--json`` prints the daemon's answer unchanged (go-libipni's ``find/model`` shapes), so
  scripts written for storetheindex read it; tables decode what the JSON keeps as base64
  (context IDs, the metadata's protocol codes).
- Every failure is one line on stderr: bad input exits 2 (``CliError``); no daemon, no results
  and refusals exit 1 (``CommandFailed``).
"""

from __future__ import annotations

import base64
import json
import string
import time
from typing import TYPE_CHECKING, Any

import click

from indexer.config import Server
from indexer.errors import CliError, CommandFailed
from sync import BadCid, BadPeerId, Link, PeerId, decode_metadata

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AS_JSON",
    "Api",
    "CommandFailed",
    "ago",
    "echo_json",
    "find",
    "one_line",
    "parse_peer",
    "print_table",
    "providers",
    "short",
]

TIMEOUT = 10.0
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
FIND_URL = click.option(
    "--find-url", envvar="INDEXER_FIND_URL", default=f"http://{Server().find_addr}",
    show_default=True, help="The daemon's find API (env INDEXER_FIND_URL).",
)  # fmt: skip
PROTOCOLS = {0x0900: "bitswap", 0x0910: "graphsync-filecoinv1", 0x0920: "http"}
PROTOCOLS[0x0930] = "filecoin-piece-http"
_HEX = set(string.hexdigits)


def one_line(text: str) -> str:
    return " ".join(text.split())[:300]


class Api:
    """A short-lived sync HTTP client of one daemon URL; every failure is one line."""

    def __init__(self, base: str) -> None:
        import httpx

        self.base = base.rstrip("/")
        self.client = httpx.Client(timeout=TIMEOUT, headers={"accept": "application/json"})

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def request(
        self, method: str, path: str, body: bytes = b"", params: dict[str, str] | None = None
    ) -> httpx.Response:
        import httpx

        try:
            return self.client.request(method, self.base + path, content=body, params=params)
        except httpx.ConnectError:
            raise CommandFailed(f"no daemon at {self.base}: is `indexer daemon` running?") from None
        except httpx.TimeoutException:
            raise CommandFailed(f"{self.base} did not answer within {TIMEOUT:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(f"cannot reach {self.base}: {one_line(str(exc))}") from None

    def check(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            status, text = response.status_code, one_line(response.text)
            raise CommandFailed(f"{self.base} answered {status}: {text}")

    def json(self, path: str, missing: str | None = None) -> Any:
        response = self.request("GET", path)
        if response.status_code == 404 and missing:
            raise CommandFailed(missing)
        self.check(response)
        try:
            return response.json()
        except ValueError:
            raise CommandFailed(f"{self.base}{path} did not answer JSON") from None


def get_json(base: str, path: str, as_json: bool, missing: str | None = None) -> Any:
    """GET ``path`` as JSON; with ``as_json`` print it and return None: the caller is done."""
    with Api(base) as api:
        doc = api.json(path, missing=missing)
    if as_json:
        echo_json(doc)
        return None
    return doc


def parse_peer(text: str, what: str) -> PeerId:
    try:
        return PeerId.parse(text)
    except BadPeerId as exc:
        raise CliError(f"bad {what} ID {text!r}: {exc}") from None


def short(cid: object, keep: int = 8) -> str:
    """A CID or peer ID cut to its head and tail, for tables."""
    if not isinstance(cid, str) or not cid:
        return "-"
    return cid if len(cid) <= 2 * keep + 2 else f"{cid[:6]}…{cid[-keep:]}"


def ago(when: object, now: float | None = None) -> str:
    """Unix seconds as "12 s ago" (or "-")."""
    if not isinstance(when, int | float) or isinstance(when, bool):
        return "-"
    delta = max(0.0, (time.time() if now is None else now) - when)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if delta >= size:
            return f"{delta / size:.0f} {unit} ago"
    return f"{delta:.0f} s ago"


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "\n".join(map(str, value)) or "-"
    return str(value)


def print_table(title: str, headers: list[str], rows: list[list[object]]) -> None:
    """A rich table on stdout; no ``headers`` means a two-column key/value table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*(headers or ["", ""]), title=title, show_header=bool(headers))
    for row in rows:
        table.add_row(*(_text(cell) for cell in row))
    Console().print(table)


def echo_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2))


# --- find ---------------------------------------------------------------------------------------


def find_path(text: str) -> str:
    """The find API path that looks ``text`` up; ``CliError`` when it names no multihash."""
    from indexer.cli.mhfile import parse_multihash_line

    text = text.strip()
    if text and not set(text) <= _HEX:
        try:
            return f"/cid/{Link.parse(text)}"
        except BadCid:
            pass
    try:
        mh = parse_multihash_line(text) if text else b""
    except BadCid:
        mh = b""
    if not mh:
        raise CliError(f"{text!r} is not a CID nor a base58 or hex multihash")
    import base58

    return f"/multihash/{base58.b58encode(mh).decode()}"


def _b64(value: object) -> bytes:
    try:
        return base64.b64decode(value) if isinstance(value, str) else b""
    except ValueError:
        return b""


def context_text(raw: bytes) -> str:
    """A context ID as text when it is printable UTF-8, else as hex."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return raw.hex()
    return text if text.isprintable() else raw.hex()


def protocols(raw: bytes) -> list[str]:
    """The metadata's protocols, from the varint code that prefixes each."""
    decoded = decode_metadata(raw)
    names = [PROTOCOLS.get(t.code, f"0x{t.code:04x}") for t in decoded.transports]
    return names + (["(undecodable)"] if decoded.opaque else [])


@click.command("find")
@click.argument("key", metavar="MH_OR_CID")
@FIND_URL
@AS_JSON
def find(key: str, find_url: str, as_json: bool) -> None:
    """Who provides a multihash (base58 or hex) or a CID."""
    path = find_path(key)
    answer = get_json(find_url, path, as_json, missing=f"no results for {key.strip()}")
    if answer is None:
        return
    rows: list[list[object]] = []
    for result in answer.get("MultihashResults") or []:
        for found in result.get("ProviderResults") or []:
            who = found.get("Provider") or {}
            ctx, meta = _b64(found.get("ContextID")), _b64(found.get("Metadata"))
            rows.append([who.get("ID"), context_text(ctx), protocols(meta), who.get("Addrs")])
    print_table(
        f"providers of {key.strip()}", ["provider", "context ID", "protocol", "addrs"], rows
    )


@click.command("providers")
@FIND_URL
@AS_JSON
def providers(find_url: str, as_json: bool) -> None:
    """Every provider the daemon has indexed (the find API's GET /providers)."""
    answer = get_json(find_url, "/providers", as_json)
    if answer is None:
        return
    rows: list[list[object]] = []
    for info in answer:
        who, last = info.get("AddrInfo") or {}, info.get("LastAdvertisement") or {}
        publisher = (info.get("Publisher") or {}).get("ID")
        when = info.get("LastAdvertisementTime") or None
        rows.append([who.get("ID"), who.get("Addrs"), last.get("/"), when, publisher])
    headers = ["provider", "addrs", "last ad", "last ad time", "publisher"]
    print_table("providers", headers, rows)
