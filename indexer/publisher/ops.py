"""Publish requests: one value for "add / remove / update metadata", applied locally or remotely.

The ``indexer publisher`` CLI builds a ``PublishRequest``.  When it can open the publisher's
database it applies the request itself; when a running ``publisher serve`` holds the database
(LevelDB is single-process) it sends the same request, as JSON, over the server's owner-only unix
socket, and the serving process applies it and announces the new head.  Either way the same
``apply`` runs, so behaviour cannot drift between the two paths.

Rules: requests and results (``chain.Published``, the one record of a publish) encode with
msgspec (bytes as base64); errors cross the socket as ``{"error": kind, "message": text}`` and
are re-raised as the same ``SyncError`` class.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from indexer.publisher.chain import Progress, Published, Publisher
from sync import errors

__all__ = ["PublishRequest", "apply", "error_from_json", "error_to_json"]


class PublishRequest(msgspec.Struct, frozen=True):
    op: Literal["add", "remove", "metadata"]
    context_id: bytes
    multihashes: list[bytes] = msgspec.field(default_factory=list)
    metadata: bytes = b""
    addresses: list[str] | None = None


def apply(
    publisher: Publisher, request: PublishRequest, progress: Progress | None = None
) -> Published:
    if request.op == "add":
        return publisher.add(
            request.context_id,
            request.multihashes,
            request.metadata,
            request.addresses,
            progress=progress,
        )
    if request.op == "remove":
        return publisher.remove(request.context_id)
    return publisher.update_metadata(request.context_id, request.metadata)


def error_to_json(exc: errors.SyncError) -> bytes:
    return msgspec.json.encode({"error": type(exc).__name__, "message": str(exc)})


def error_from_json(raw: bytes) -> errors.SyncError:
    try:
        doc = msgspec.json.decode(raw)
        cls = getattr(errors, str(doc["error"]), errors.PublisherError)
        message = str(doc["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return errors.PublisherError(f"unexpected reply from the serving publisher: {raw[:200]!r}")
    if not (isinstance(cls, type) and issubclass(cls, errors.SyncError)):
        cls = errors.PublisherError
    return cls(message)
