"""The admin controls that change what the node holds: remove a provider, mark an ad processed,
import providers from another indexer (storetheindex's ``/removeprovider``,
``/markadprocessed``, ``/importproviders``).

Rules this module keeps:

- ``remove_provider`` first stops new work (the block, when asked; then its staged stacks go,
  unapplied), waits while a worker is inside one of its ads (``Ingester.applying``: the ad in
  flight finishes, so its writes cannot outlive the removal; a worker waiting to retry or
  frozen holds nothing), then removes its contexts in batches of
  ``REMOVE_BATCH`` (``IndexStore.remove_provider_batch``) with a checkpoint between batches, so
  neither memory nor the event loop is held by a provider of millions of contexts, and last its
  registry record.  Its multihashes are left dangling for compaction; find stops returning them
  at once (the value records are gone).
- ``mark_processed`` pops, unapplied and marked done, the provider's staged ads from the next one
  up to the one named (ads are applied oldest first, so the older ones go with it); an ad not
  staged for the provider is refused, and so is a provider whose worker is inside an ad right
  now (``Ingester.applying``); a worker waiting to retry an ad is not, so a stuck ad is marked
  between two attempts, and the worker goes on with the next one.
- ``import_providers`` reads another indexer's ``GET /providers`` (at most ``IMPORT_LIMIT``
  bytes), registers each provider not already registered whose publisher the policy allows to
  publish for it, and asks a sync of each new provider's publisher at its address.
"""

from __future__ import annotations

import base64
import binascii

import httpx
import msgspec
import structlog
import trio

from indexer.errors import BadRequest
from indexer.ingest.engine import Ingester
from indexer.policy import LivePolicy
from staging import StagingArea
from store import ProviderRecord
from sync import BadPeerId, Link, PeerId, SyncError

__all__ = [
    "IMPORT_LIMIT",
    "REMOVE_BATCH",
    "Imported",
    "Marked",
    "Removed",
    "import_providers",
    "mark_processed",
    "remove_provider",
]

log = structlog.get_logger("admin")

REMOVE_BATCH = 1000  # contexts removed per batch
IMPORT_LIMIT = 64 << 20  # bytes of another indexer's /providers read at most
IMPORT_TIMEOUT = 60.0  # seconds to read it


class Removed(msgspec.Struct, frozen=True):
    provider: str = msgspec.field(name="Provider")
    blocked: bool = msgspec.field(name="Blocked")
    contexts: int = msgspec.field(name="Contexts")
    staged_ads: int = msgspec.field(name="StagedAds")
    registered: bool = msgspec.field(name="Registered")


class Marked(msgspec.Struct, frozen=True):
    provider: str = msgspec.field(name="Provider")
    ad: str = msgspec.field(name="Ad")
    popped: list[str] = msgspec.field(name="Popped")


class Imported(msgspec.Struct, frozen=True):
    source: str = msgspec.field(name="From")
    imported: list[str] = msgspec.field(name="Imported")
    skipped: int = msgspec.field(name="Skipped")


async def remove_provider(
    ingester: Ingester,
    staging: StagingArea,
    policy: LivePolicy,
    provider: PeerId,
    *,
    block: bool,
    batch: int = REMOVE_BATCH,
) -> Removed:
    index, raw = ingester.index, provider.raw
    registered = index.provider(raw) is not None
    staged = bool(staging.stacks(raw))
    if not (registered or staged or index.has_contexts(raw)):
        raise BadRequest(404, f"provider {provider} not found")
    if block:
        policy.block(provider)
    dropped = staging.drop_provider(raw)
    while ingester.applying(raw):  # an ad in flight: let it finish, then remove what it wrote
        await ingester.wait_changed()
    dropped += staging.drop_provider(raw)  # what a worker re-staged as it ended (nothing, or state)
    contexts = 0
    while n := index.remove_provider_batch(raw, batch):
        contexts += n
        await trio.lowlevel.checkpoint()
    index.kv.write_batch(index.remove_provider_record(raw))
    log.info(
        "provider removed", provider=str(provider), blocked=block, contexts=contexts,
        staged_ads=dropped,
    )  # fmt: skip
    return Removed(str(provider), block, contexts, dropped, registered)


def mark_processed(ingester: Ingester, staging: StagingArea, provider: PeerId, ad: Link) -> Marked:
    raw = provider.raw
    stacks = staging.stacks(raw)
    if ingester.index.provider(raw) is None and not stacks:
        raise BadRequest(404, f"provider {provider} not found")
    if not staging.holds(raw, ad.raw):
        done = staging.done(ad.raw)
        why = "already processed" if done is not None else "not staged"
        raise BadRequest(409, f"ad {ad} is {why} for provider {provider}: nothing to mark")
    if ingester.applying(raw):
        raise BadRequest(
            409, f"a worker is applying an ad of provider {provider} right now: try again "
            "(a worker retrying an ad waits between attempts, when the ad can be marked)",
        )  # fmt: skip
    popped: list[str] = []
    while (entry := staging.next_entry(raw)) is not None:  # no checkpoint: no worker can start
        staging.finish(entry, ok=True, error="marked processed by hand")
        popped.append(str(Link(entry.ad.cid)))
        if entry.ad.cid == ad.raw:
            break
    log.info("ad marked processed by hand", provider=str(provider), ad=str(ad), popped=popped)
    return Marked(str(provider), str(ad), popped)


class _AddrInfo(msgspec.Struct, frozen=True):
    id: str = msgspec.field(name="ID")
    addrs: list[str] | None = msgspec.field(name="Addrs", default=None)


class _Provider(msgspec.Struct, frozen=True):
    """What an import reads of another indexer's ``ProviderInfo`` (the rest is ignored)."""

    addr_info: _AddrInfo = msgspec.field(name="AddrInfo")
    publisher: _AddrInfo | None = msgspec.field(name="Publisher", default=None)


def import_source(body: bytes) -> str:
    """The indexer URL of an import request: storetheindex's ``{"indexer": <base64 URL>}`` (a
    Go ``[]byte``), or the URL as a plain string."""
    try:
        doc = msgspec.json.decode(body or b"null", type=dict[str, str])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRequest(400, f'body must be {{"indexer": "<url>"}}: {exc}') from None
    given = doc.get("indexer", "")
    if not given:
        raise BadRequest(400, "missing indexer url in request")
    url = given
    if not given.startswith(("http://", "https://")):
        try:
            url = base64.b64decode(given, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(400, f"bad indexer url: {given[:100]!r}") from None
    if not url.startswith(("http://", "https://")) or "\n" in url:
        raise BadRequest(400, f"bad indexer url: {url[:100]!r} (http:// or https:// only)")
    return url.rstrip("/")


async def _fetch_providers(url: str) -> list[_Provider]:
    try:
        async with (
            httpx.AsyncClient(timeout=IMPORT_TIMEOUT) as client,
            client.stream("GET", f"{url}/providers", headers={"accept": "application/json"}) as r,
        ):
            if r.status_code != 200:
                raise BadRequest(
                    502, f"cannot get providers from {url}: it answered {r.status_code}"
                )
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > IMPORT_LIMIT:
                    raise BadRequest(502, f"{url}/providers is over {IMPORT_LIMIT} bytes")
    except httpx.HTTPError as exc:
        raise BadRequest(502, f"cannot get providers from {url}: {exc}") from None
    try:
        return msgspec.json.decode(bytes(body), type=list[_Provider])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRequest(502, f"{url}/providers is not a list of providers: {exc}") from None


async def import_providers(ingester: Ingester, policy: LivePolicy, body: bytes) -> Imported:
    url = import_source(body)
    index, imported, skipped = ingester.index, [], 0
    for info in await _fetch_providers(url):
        try:
            provider = PeerId.parse(info.addr_info.id)
            publisher = PeerId.parse(info.publisher.id) if info.publisher else provider
        except BadPeerId:
            skipped += 1
            continue
        if index.provider(provider.raw) is not None or not (
            policy.publisher_allowed(publisher) and policy.may_publish(publisher, provider)
        ):
            skipped += 1
            continue
        pub_addrs = list(info.publisher.addrs or []) if info.publisher else []
        record = ProviderRecord(
            addresses=list(info.addr_info.addrs or []),
            publisher=publisher.raw,
            publisher_addrs=pub_addrs,
        )
        index.kv.write_batch(index.put_provider(provider.raw, record))
        imported.append(str(provider))
        addrs = pub_addrs or (record.addresses if publisher == provider else [])
        if addrs and not ingester.is_syncing(publisher.raw):
            try:
                ingester.request_sync(publisher, addrs)
            except SyncError as exc:
                log.info("imported provider not synced", provider=str(provider), error=str(exc))
    log.info("imported providers", source=url, count=len(imported), skipped=skipped)
    return Imported(url, imported, skipped)
