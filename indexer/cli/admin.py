"""``indexer admin ...``: drive and inspect a running daemon through its admin API.

Rules this module keeps:

- Every command talks HTTP to the admin API (``--admin-url``, else ``$INDEXER_ADMIN_URL``, else
  ``http://127.0.0.1:3002``) with a short timeout; the one exception is ``staging ... --data-dir``,
  which reads a stopped daemon's LevelDB directly and never writes it (a locked database means
  the daemon runs: say so and point at the API; a missing one is never created).
- Every command sends ``Authorization: Bearer <token>`` when ``--admin-token`` or
  ``$INDEXER_ADMIN_TOKEN`` is set (the environment is the better place: a command line is
  visible to every user of the machine).  A 401 is one line saying which it was: no token sent
  ("the daemon needs an admin token: set INDEXER_ADMIN_TOKEN ...") or a wrong one; exit 1.
- Offline and online print the same rows: both come from ``indexer.admin.views``.
- Errors are one line on stderr, never a traceback: bad input (a peer ID, a multiaddr, a data
  directory) exits 2 (``CliError``); what the daemon refuses or cannot do (no daemon, a sync
  already running, an unknown provider, a failed sync) exits 1 (``CommandFailed``).
- ``sync --addr`` must name a transport: an HTTP address (``/http``, ``/https``) or a libp2p one
  (ending in ``/p2p/<peer ID>``); a bare ``/ip4/../tcp/N`` is refused with the fix (exit 2).
  Ctrl-C of ``sync --wait`` stops following, not the sync: one line says it goes on in the
  daemon, exit 130, and a second Ctrl-C changes nothing.
- ``--json`` prints one JSON document; ``sync --wait`` draws a progress bar only when stdout is a
  terminal and ``--json`` is off, and stops when the sync has finished and nothing of the
  publisher is left staged (it never relies on the multihash count).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from indexer.cli.find import (
    AS_JSON,
    Api,
    CommandFailed,
    ago,
    echo_json,
    one_line,
    parse_peer,
    print_table,
    short,
)
from indexer.config import DB_DIR, Server
from indexer.errors import CliError
from indexer.security import ADMIN_TOKEN_ENV, valid_token
from sync import BadMultiaddr, PeerId

if TYPE_CHECKING:
    import httpx

    from staging import StagingArea
    from store import IndexStore

__all__ = ["AdminClient", "admin"]

POLL = 0.25
ADMIN_URL = click.option(
    "--admin-url", envvar="INDEXER_ADMIN_URL", default=f"http://{Server().admin_addr}",
    show_default=True, help="The daemon's admin API (env INDEXER_ADMIN_URL).",
)  # fmt: skip
ADMIN_TOKEN = click.option(
    "--admin-token", envvar=ADMIN_TOKEN_ENV, default="", show_default=False,
    help=f"The daemon's admin token (env {ADMIN_TOKEN_ENV}, the better place for it).",
)  # fmt: skip
OFFLINE = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Read a STOPPED daemon's data directory instead of asking the admin API.",
)  # fmt: skip


class AdminClient(Api):
    """``Api`` with the admin token, and a 401 explained in one line."""

    def __init__(self, base: str, token: str) -> None:
        if token and not valid_token(token):
            raise CliError(
                f"{ADMIN_TOKEN_ENV} / --admin-token is not an admin token "
                "(16 to 1024 characters of A-Z a-z 0-9 - . _ ~ + /, then = padding)"
            )
        super().__init__(base)
        self.sent_token = bool(token)
        if token:
            self.client.headers["authorization"] = f"Bearer {token}"

    def check(self, response: httpx.Response) -> None:
        if response.status_code == 401:
            if self.sent_token:
                raise CommandFailed(
                    f"{self.base} refused the admin token: {ADMIN_TOKEN_ENV} (or --admin-token) "
                    "is not the daemon's"
                )
            raise CommandFailed(
                f"the daemon needs an admin token: set {ADMIN_TOKEN_ENV} (or pass --admin-token) "
                "to the daemon's token"
            )
        super().check(response)


def _get_json(base: str, token: str, path: str, as_json: bool) -> Any:
    """GET ``path`` as JSON; with ``as_json`` print it and return None: the caller is done."""
    with AdminClient(base, token) as api:
        doc = api.json(path)
    if as_json:
        echo_json(doc)
        return None
    return doc


@click.group()
def admin() -> None:
    """Ask a running daemon to sync, and look at its staging area and publishers."""


@admin.command("sync")
@click.option("--publisher", "peer_text", required=True, help="The publisher's peer ID.")
@click.option("--addr", help="Its multiaddr (optional when the daemon knows the publisher).")
@click.option(
    "--depth",
    type=click.IntRange(min=-1),
    help="Walk at most N ads (0: as configured, -1: no limit).",
)
@click.option("--resync", is_flag=True, help="Walk past ads already indexed.")
@click.option("--wait", is_flag=True, help="Follow the sync until everything is indexed.")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def sync(
    peer_text: str,
    addr: str | None,
    depth: int | None,
    resync: bool,
    wait: bool,
    admin_url: str,
    admin_token: str,
    as_json: bool,
) -> None:
    """Sync a publisher now (storetheindex's POST /ingest/sync/{peer})."""
    from sync.ipnisync.maurl import publisher_endpoint

    peer = parse_peer(peer_text, "publisher")
    if addr is not None:
        try:
            endpoint = publisher_endpoint([addr], peer)
        except BadMultiaddr as exc:
            raise CliError(f"--addr: {exc}") from None
        if not endpoint.urls and "/p2p/" not in addr:
            raise CliError(
                f"--addr {addr} names no transport to fetch from: add /http for an HTTP "
                f"publisher (e.g. {addr.rstrip('/')}/http), or /p2p/{peer} for a libp2p one"
            )
    params = {"depth": str(depth)} if depth is not None else {}
    if resync:
        params["resync"] = "true"
    body = json.dumps(addr).encode() if addr else b""
    with AdminClient(admin_url, admin_token) as api:
        response = api.request("POST", f"/ingest/sync/{peer}", body, params)
        if response.status_code == 409:
            raise CommandFailed(f"a sync of {peer} is already running")
        if response.status_code == 400 and addr is None and "no address" in response.text:
            raise CommandFailed(f"the daemon knows no address of {peer}: pass --addr")
        api.check(response)
        if not wait:
            if as_json:
                echo_json({"publisher": str(peer), "started": True})
            else:
                click.echo(f"sync of {peer} started")
            return
        bar = sys.stdout.isatty() and not as_json
        try:
            row = _follow(api, peer, _bar_updater() if bar else None)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C changes nothing
            click.echo(
                f"interrupted: the sync of {peer} goes on in the daemon (follow it with "
                f"`indexer admin publishers`)",
                err=True,
            )
            raise click.exceptions.Exit(130) from None
    if as_json:
        echo_json(row)
        return
    s = row.get("sync") or {}
    click.echo(
        f"synced {peer}: {s.get('walked', 0)} ads walked, {s.get('staged', 0)} staged, "
        f"{s.get('processed', 0)} processed, {s.get('indexed', 0)} multihashes indexed; "
        f"latest processed {row.get('latest_processed') or '-'}"
    )


Update = Callable[[dict[str, Any]], None]


def _follow(
    api: Api, peer: PeerId, update: contextlib.AbstractContextManager[Update] | None
) -> Any:
    """Poll the publisher's row until its sync is over and nothing of it is staged."""
    with update or contextlib.nullcontext(lambda s: None) as show:
        while True:
            row = api.json(f"/publishers/{peer}", missing=f"the daemon forgot publisher {peer}")
            live = row.get("sync") or {}
            show(live)
            if not live.get("running", False):
                if live.get("error"):
                    raise CommandFailed(f"sync of {peer} failed: {one_line(live['error'])}")
                if row.get("pending_ads", 0) == 0:
                    return row
            time.sleep(POLL)


@contextlib.contextmanager
def _bar_updater() -> Iterator[Update]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TextColumn("{task.fields[note]}")) as progress:
        walked = progress.add_task("ads walked", total=None, note="")
        applied = progress.add_task("ads processed", total=None, note="")

        def update(live: dict[str, Any]) -> None:
            done = not live.get("running", True)
            n = int(live.get("walked", 0))
            progress.update(walked, completed=n, total=n if done else None)
            total = int(live.get("staged", 0)) if done else None
            note = f"{live.get('indexed', 0)} multihashes indexed"
            progress.update(
                applied, completed=int(live.get("processed", 0)), total=total, note=note
            )

        yield update


@contextlib.contextmanager
def _offline(data_dir: Path) -> Iterator[tuple[StagingArea, IndexStore[Any]]]:
    """The staging area and index of a stopped daemon's data directory, opened read-only."""
    from staging import StagingArea
    from store import KV, IndexStore, StoreLocked, StoreNotFound

    db = data_dir / DB_DIR
    if not db.is_dir():
        raise CliError(f"no indexer database at {db}: is {data_dir} a daemon's --data-dir?")
    try:
        kv = KV(db, create=False)
    except StoreLocked:
        raise CommandFailed(
            f"the daemon is running on {data_dir} (LevelDB is locked): "
            "use the admin API (drop --data-dir)"
        ) from None
    except StoreNotFound:
        raise CliError(
            f"no indexer database at {db}: is {data_dir} a daemon's --data-dir?"
        ) from None
    with kv:
        yield StagingArea(kv), IndexStore(kv)


@admin.group("staging")
def staging() -> None:
    """What is staged: per provider, the ads waiting to be indexed."""


@staging.command("ls")
@ADMIN_URL
@ADMIN_TOKEN
@OFFLINE
@AS_JSON
def staging_ls(admin_url: str, admin_token: str, data_dir: Path | None, as_json: bool) -> None:
    """One row per provider with staged ads."""
    if data_dir is not None:
        from indexer.admin.views import staging_rows

        with _offline(data_dir) as (area, _):
            rows: Any = staging_rows(area, None)
    else:
        with AdminClient(admin_url, admin_token) as api:
            rows = api.json("/staging")
    if as_json:
        echo_json(rows)
        return
    headers = ["provider", "stacks", "pending ads", "next ad", "publishers", "oldest staged"]
    headers += ["attempts", "working", "last error"]
    table = [
        [r["provider"], r["stacks"], r["pending_ads"], short(r["next_ad"]),
         [short(p) for p in r["publishers"]], ago(r["oldest_staged"]), r["attempts"],
         r["working"], r["last_error"]]
        for r in rows
    ]  # fmt: skip
    print_table("staging" if table else "staging (nothing pending)", headers, table)


@staging.command("show")
@click.argument("provider")
@ADMIN_URL
@ADMIN_TOKEN
@OFFLINE
@AS_JSON
def staging_show(
    provider: str, admin_url: str, admin_token: str, data_dir: Path | None, as_json: bool
) -> None:
    """A provider's stacks, oldest first, and its registry record."""
    peer = parse_peer(provider, "provider")
    if data_dir is not None:
        from indexer.admin.views import UnknownPeer, staging_detail

        with _offline(data_dir) as (area, index):
            try:
                doc: Any = staging_detail(area, index, peer)
            except UnknownPeer:
                raise CommandFailed(f"unknown provider {peer}") from None
    else:
        with AdminClient(admin_url, admin_token) as api:
            doc = api.json(f"/staging/{peer}", missing=f"unknown provider {peer}")
    if as_json:
        echo_json(doc)
        return
    summary = [["pending ads", doc["pending_ads"]], ["last ad", doc["last_ad"]]]
    summary += [["last ad time", ago(doc["last_ad_time"])], ["last error", doc["last_error"]]]
    print_table(f"provider {peer}", [], summary)
    headers = ["seq", "walk", "publisher", "created", "total", "pending", "attempts", "next ads"]
    stacks = [
        [s["seq"], s["walk"], short(s["publisher"]), ago(s["created"]), s["total"], s["pending"],
         s["attempts"], [short(c) for c in s["next_ads"]]]
        for s in doc["stacks"]
    ]  # fmt: skip
    if stacks:
        print_table("stacks (oldest first)", headers, stacks)


@admin.command("publishers")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def publishers(admin_url: str, admin_token: str, as_json: bool) -> None:
    """Every publisher the daemon knows: cursors, last sync, pending ads, last error."""
    rows = _get_json(admin_url, admin_token, "/publishers", as_json)
    if rows is None:
        return
    headers = ["publisher", "latest scanned", "latest processed", "last sync", "pending ads"]
    headers += ["syncing", "last error"]
    table = [
        [r["publisher"], short(r["latest_scanned"]), short(r["latest_processed"]),
         ago(r["last_sync"]), r["pending_ads"], r["syncing"], r["last_error"]]
        for r in rows
    ]  # fmt: skip
    print_table("publishers", headers, table)


@admin.command("status")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def status(admin_url: str, admin_token: str, as_json: bool) -> None:
    """The daemon's peer ID, frozen flag and disk usage."""
    doc = _get_json(admin_url, admin_token, "/status", as_json)
    if doc is None:
        return
    usage = doc.get("Usage", -1)
    rows = [["peer ID", doc.get("ID")], ["frozen", doc.get("Frozen")]]
    if doc.get("FrozenAt"):
        rows.append(["frozen at", doc["FrozenAt"]])
    rows.append(["disk usage", f"{usage:.1f} %" if usage >= 0 else "unknown"])
    print_table(f"indexer at {admin_url}", [], rows)


@admin.command("cluster")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def cluster(admin_url: str, admin_token: str, as_json: bool) -> None:
    """The cluster's nodes (a cluster node answers): lease, publishers, providers, staged ads."""
    doc = _get_json(admin_url, admin_token, "/cluster", as_json)
    if doc is None:
        return
    headers = ["node", "joined", "renewed", "publishers", "providers", "staged", "last error"]
    rows = [
        [n["node"], ago(n["joined"]), ago(n["renewed"]), len(n["publishers"]),
         len(n["providers"]), n["staged_ads"], n["last_error"]]
        for n in doc["nodes"]
    ]  # fmt: skip
    title = (
        f"cluster as node {doc['node']} read it {ago(doc['at'])}: {doc['publishers']} publishers"
    )
    if doc["unowned"]:
        title += f", {len(doc['unowned'])} unowned"
    print_table(title, headers, rows)


@admin.command("remove-provider")
@click.argument("provider")
@click.option("--block", is_flag=True, help="Also block it until restart (list it in [policy]).")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def remove_provider(
    provider: str, block: bool, admin_url: str, admin_token: str, as_json: bool
) -> None:
    """Drop a provider and all its content (storetheindex's DELETE /removeprovider/{id})."""
    peer = parse_peer(provider, "provider")
    params = {"block": "true" if block else "false"}
    with AdminClient(admin_url, admin_token) as api:
        response = api.request("DELETE", f"/removeprovider/{peer}", params=params)
        if response.status_code == 404:
            raise CommandFailed(f"unknown provider {peer}")
        api.check(response)
        doc = response.json()
    if as_json:
        echo_json(doc)
        return
    rows = [["contexts removed", doc["Contexts"]], ["staged ads dropped", doc["StagedAds"]]]
    rows += [["registry record", "removed" if doc["Registered"] else "none"]]
    rows += [["blocked", doc["Blocked"]]]
    print_table(f"provider {peer} removed", [], rows)


@admin.command("mark-processed")
@click.argument("provider")
@click.argument("ad")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def mark_processed(provider: str, ad: str, admin_url: str, admin_token: str, as_json: bool) -> None:
    """Mark a staged ad (and the older ones before it) processed, unapplied
    (storetheindex's PUT /markadprocessed/{id}?cid=)."""
    from sync import BadCid, Link

    peer = parse_peer(provider, "provider")
    try:
        link = Link.parse(ad)
    except BadCid as exc:
        raise CliError(f"bad ad CID {ad!r}: {exc}") from None
    with AdminClient(admin_url, admin_token) as api:
        response = api.request("PUT", f"/markadprocessed/{peer}", params={"cid": str(link)})
        if response.status_code == 404:
            raise CommandFailed(f"unknown provider {peer}")
        if response.status_code == 409:
            raise CommandFailed(one_line(response.text))
        api.check(response)
        doc = response.json()
    if as_json:
        echo_json(doc)
        return
    print_table(
        f"{len(doc['Popped'])} ads of {peer} marked processed", ["ad"],
        [[c] for c in doc["Popped"]],
    )  # fmt: skip


@admin.command("import-providers")
@click.option("--from", "source", required=True, help="The other indexer's find URL.")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def import_providers(source: str, admin_url: str, admin_token: str, as_json: bool) -> None:
    """Register the providers another indexer lists at GET /providers, and sync their
    publishers (storetheindex's POST /importproviders)."""
    if not source.startswith(("http://", "https://")):
        raise CliError(f"--from must be an http:// or https:// URL, not {source!r}")
    body = json.dumps({"indexer": source}).encode()
    with AdminClient(admin_url, admin_token) as api:
        response = api.request("POST", "/importproviders", body)
        api.check(response)
        doc = response.json()
    if as_json:
        echo_json(doc)
        return
    click.echo(
        f"{len(doc['Imported'])} providers imported from {doc['From']}, {doc['Skipped']} skipped"
    )
    if doc["Imported"]:
        print_table("imported (their publishers are being synced)", ["provider"],
                    [[p] for p in doc["Imported"]])  # fmt: skip


@admin.command("telemetry")
@click.argument("provider", required=False)
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def telemetry(provider: str | None, admin_url: str, admin_token: str, as_json: bool) -> None:
    """Ingest rates per provider since last read (storetheindex's GET /telemetry/providers)."""
    peer = parse_peer(provider, "provider") if provider else None
    path = f"/telemetry/providers/{peer}" if peer else "/telemetry/providers"
    with AdminClient(admin_url, admin_token) as api:
        response = api.request("GET", path)
        if response.status_code == 404 and peer:
            raise CommandFailed(f"no ingest rate for provider {peer}")
        api.check(response)
        doc: Any = {} if response.status_code == 204 else response.json()
    rates = {str(peer): doc} if peer else doc
    if as_json:
        echo_json(rates)
        return
    rows = []
    for pid, r in sorted(rates.items()):
        seconds = r["Elapsed"] / 1e9
        per_second = int(r["Count"] / seconds) if seconds > 0 else 0
        rows.append([pid, r["Count"], r["Samples"], f"{seconds:.3f}", per_second])
    headers = ["provider", "multihashes", "ads", "seconds", "mh/s"]
    print_table("ingest rates" if rows else "ingest rates (no new rate information)", headers, rows)


@admin.command("loglevel")
@click.argument("settings", nargs=-1)
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def loglevel(settings: tuple[str, ...], admin_url: str, admin_token: str, as_json: bool) -> None:
    """Set loggers' levels now, SUBSYSTEM=LEVEL (a regex over logger names; debug, info, warn,
    error); with none, list the loggers (storetheindex's /config/log/level and /subsystems)."""
    from indexer.logs import LEVELS

    params = {}
    for setting in settings:
        name, sep, level = setting.partition("=")
        if not sep or not name or level.lower() not in LEVELS:
            raise CliError(f"{setting!r}: want SUBSYSTEM=LEVEL, LEVEL one of {', '.join(LEVELS)}")
        params[name] = level.lower()
    with AdminClient(admin_url, admin_token) as api:
        if not params:
            response = api.request("GET", "/config/log/subsystems")
            api.check(response)
            names = response.text.split()
            if as_json:
                echo_json(names)
            else:
                print_table("loggers", ["logger"], [[n] for n in names])
            return
        response = api.request("POST", "/config/log/level", params=params)
        api.check(response)
        doc = response.json()
    if as_json:
        echo_json(doc)
        return
    rows = [[d["Subsystem"], d["Level"], d["Matched"]] for d in doc]
    print_table("log levels set", ["subsystem", "level", "loggers now"], rows)


@admin.command("freeze")
@click.option("--unfreeze", is_flag=True, help="Thaw it: ingest again (DELETE /freeze).")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def freeze(unfreeze: bool, admin_url: str, admin_token: str, as_json: bool) -> None:
    """Freeze the indexer: no content ingested, find served, announces recorded
    (storetheindex's PUT /freeze)."""
    with AdminClient(admin_url, admin_token) as api:
        response = api.request("DELETE" if unfreeze else "PUT", "/freeze")
        api.check(response)
        doc = response.json()
    if as_json:
        echo_json(doc)
    elif doc["Frozen"]:
        click.echo(f"frozen since {doc['FrozenAt']}")
    else:
        click.echo("not frozen: ingesting")


@admin.command("reload-config")
@ADMIN_URL
@ADMIN_TOKEN
@AS_JSON
def reload_config(admin_url: str, admin_token: str, as_json: bool) -> None:
    """Read the daemon's config file again (as SIGHUP does); a bad file changes nothing."""
    with AdminClient(admin_url, admin_token) as api:
        response = api.request("POST", "/reloadconfig")
        api.check(response)
        doc = response.json()
    if as_json:
        echo_json(doc)
        return
    click.echo(f"reloaded {doc['path']}")
    if doc["not_applied"]:
        click.echo(f"not applied until a restart: {', '.join(doc['not_applied'])}")
