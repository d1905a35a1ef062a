"""Typed errors of the ``sync`` package.

Every failure the data model can report is one of these classes, so callers branch on types,
never on message text.  Third-party exceptions (msgspec, cbrrr, cryptography, multiaddr) are
translated where they are caught and never escape this package.

Each class says, in its ``retry`` attribute, what an ingest worker does about it, as
storetheindex's ``internal/ingest/error.go`` does: ``Retry.NEVER`` (permanent: the block itself is
wrong; skip the ad, mark it processed-with-error and go on), ``Retry.LIMITED`` (retry with backoff,
permanent after ``max_attempts``: a 404 may be a publisher catching up, a hash mismatch a broken
transfer), ``Retry.ALWAYS`` (transient: the network or the publisher failed; retry with backoff and
keep the staged stack intact).  ``retry_of`` makes that decision for any exception, in one place:
an exception that is not a ``SyncError`` is a bug (or a failure of the store) and is retried with
backoff, never skipped, so no ad is lost to a bug.

The tree::

    SyncError
    ├── ModelError                 NEVER: the bytes are not a valid IPNI object
    │   ├── BadCid                 a CID or multihash that does not parse
    │   ├── HashMismatch           LIMITED: the bytes do not hash to the CID they were fetched by
    │   ├── UnknownCodec           an IPLD codec or hash function this indexer does not speak
    │   ├── DecodeError            bytes that are not valid dag-json / dag-cbor / protobuf
    │   ├── SchemaError            decoded, but not the shape of the schema (missing, wrong type)
    │   │   ├── FieldTooLarge      a field over its limit (ContextID 64 B, Metadata 1 KiB, ...)
    │   │   └── RepeatedLink       a HAMT that links one node twice: not a tree
    │   ├── BadPeerId              a peer ID string or public key that does not parse
    │   ├── BadMultiaddr           a multiaddr that does not parse
    │   ├── BlockTooLarge          a block over the size cap (4 MiB by default)
    │   │   └── ResponseTooLarge   a libp2p body past its buffer: the fetcher's BlockTooLarge
    │   ├── ChainTooLong           entries past the configured chunk/depth limit
    │   │   └── EntriesOverBudget  blocks or time out of proportion to the multihashes yielded
    │   └── SignatureError         an envelope or signature that does not verify
    │       ├── BadEnvelope        the signed envelope itself is malformed or of the wrong type
    │       └── UnsupportedKeyType a key type libp2p does not define
    ├── PublisherError             a publisher refused an operation; its chain is unchanged
    │   ├── NotInitialized         no publisher (identity key) in the data directory
    │   ├── AlreadyInitialized     ``init`` on a directory that already has a publisher
    │   └── UnknownContext         remove / update of a context ID never published (or removed)
    ├── PolicyError                a publisher may not publish for a provider (policy says no)
    ├── TransientError             ALWAYS: retry later, keep the stack
    │   ├── FetchFailed            network failure, timeout, 5xx from the publisher
    │   │   └── TransportFailed    one address did not answer in full: the fetcher tries the next
    │   ├── BlockNotFound          LIMITED: 404 from the publisher (permanent once retries run out)
    │   ├── AddressRefused         every address in a range ``refuse_private_addrs`` refuses
    │   └── DecoderDied            LIMITED: the process decoding the block died under it
    ├── Refusal                    server control flow: answer ``status`` and close (stays inside)
    └── Hangup                     server control flow: close without a word (stays inside)
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

__all__ = [
    "AddressRefused",
    "AlreadyInitialized",
    "BadCid",
    "BadEnvelope",
    "BadMultiaddr",
    "BadPeerId",
    "BlockNotFound",
    "BlockTooLarge",
    "ChainTooLong",
    "DecodeError",
    "DecoderDied",
    "EntriesOverBudget",
    "FetchFailed",
    "FieldTooLarge",
    "Hangup",
    "HashMismatch",
    "ModelError",
    "NotInitialized",
    "PolicyError",
    "PublisherError",
    "Refusal",
    "RepeatedLink",
    "ResponseTooLarge",
    "Retry",
    "SchemaError",
    "SignatureError",
    "SyncError",
    "TransientError",
    "TransportFailed",
    "UnknownCodec",
    "UnknownContext",
    "UnsupportedKeyType",
    "retry_of",
    "unwrap_group",
]


class Retry(enum.Enum):
    """What an ingest worker does about a failed ad (see the module docstring)."""

    NEVER = "never"  # permanent: mark the ad processed-with-error and go on
    LIMITED = "limited"  # retry with backoff; permanent after the configured attempts
    ALWAYS = "always"  # transient: retry with backoff for as long as it takes


class SyncError(Exception):
    """Base class of every error raised by the ``sync`` package."""

    retry: Retry = Retry.NEVER

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help (``Retry.NEVER``)."""
        return self.retry is Retry.NEVER

    @property
    def kind(self) -> str:
        """A stable, machine-readable name of the error (for ``--json`` output and logs)."""
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class ModelError(SyncError):
    """The bytes are not a valid IPNI object; retrying cannot help."""


class BadCid(ModelError):
    """A CID or multihash that does not parse."""


class HashMismatch(ModelError):
    """The raw bytes received do not hash to the CID they were asked for."""

    retry = Retry.LIMITED  # a broken transfer or proxy, or a publisher serving garbage


class UnknownCodec(ModelError):
    """An IPLD codec or a multihash function this indexer does not implement."""


class DecodeError(ModelError):
    """Bytes that are not valid in the codec they claim (dag-json, dag-cbor, protobuf)."""


class SchemaError(ModelError):
    """A decoded node that does not have the shape of the IPNI schema."""


class FieldTooLarge(SchemaError):
    """A field over the limit go-libipni sets for it."""


class RepeatedLink(SchemaError):
    """A HAMT node links one child twice, or links a node already linked elsewhere in the walk.

    go-ipld-adl-hamt writes a tree: a node's place fixes the hash prefix of every key under it,
    so one node at two places is malformed (and is how a few blocks amplify into many fetches).
    """


class BadPeerId(ModelError):
    """A peer ID (string, bytes or public key) that does not parse."""


class BadMultiaddr(ModelError):
    """A multiaddr that does not parse."""


class BlockTooLarge(ModelError):
    """A block over the size cap."""


class ResponseTooLarge(BlockTooLarge):
    """An HTTP response whose raw body is over the client's cap (``HttpClient(max_body=)``),
    by its ``Content-Length`` (nothing of the body read) or as it streams; names the URL."""


class ChainTooLong(ModelError):
    """An entries chain (or HAMT) past the configured limit."""


class EntriesOverBudget(ChainTooLong):
    """An ad's entries cost blocks or time out of proportion to the multihashes they yielded."""


class SignatureError(ModelError):
    """A signature that does not verify, or a signed field that was changed."""


class BadEnvelope(SignatureError):
    """A libp2p signed envelope that is malformed or carries the wrong payload type."""


class UnsupportedKeyType(SignatureError):
    """A public or private key of a type libp2p does not define (or we cannot use to sign)."""


class PublisherError(SyncError):
    """A publisher operation was refused (bad input or state); nothing was published."""


class NotInitialized(PublisherError):
    """The data directory holds no publisher."""


class AlreadyInitialized(PublisherError):
    """The data directory already holds a publisher."""


class UnknownContext(PublisherError):
    """The context ID was never published, or is already removed."""


class PolicyError(SyncError):
    """The policy does not let this publisher publish for this provider."""


class TransientError(SyncError):
    """A failure of the network or of the publisher: retry later, keep the staged work."""

    retry = Retry.ALWAYS


class FetchFailed(TransientError):
    """The publisher could not be reached, timed out, or answered with a server error."""


class TransportFailed(FetchFailed):
    """The address did not answer in full (connect, I/O, TLS, protocol, deadline): try another."""


class BlockNotFound(TransientError):
    """The publisher does not have the block (now); permanent once retries are exhausted."""

    retry = Retry.LIMITED


class DecoderDied(TransientError):
    """The decode process died while it decoded the block (``indexer.ingest.offload``): killed,
    out of memory, or crashed by the block itself; this process is unharmed.  Limited: a
    worker killed from outside is gone on retry, while a block that crashes the decoder every
    time ends processed-with-error instead of stalling its provider's chain."""

    retry = Retry.LIMITED


class AddressRefused(TransientError):
    """No address of the publisher may be dialled: each is (or resolves to) a loopback, private,
    link-local, unique-local or otherwise non-public address, and ``refuse_private_addrs`` is on.

    Transient on purpose: the refusal is this indexer's setting, not a fault of the ads, so staged
    work is kept (and retried) rather than marked failed; turning the option off resumes it.
    """


class Refusal(SyncError):
    """Answer ``status`` and close: control flow inside ``sync.net.httpserver``, never leaves it."""

    def __init__(self, status: int, reason: str, *extra: tuple[bytes, bytes]) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


class Hangup(SyncError):
    """Close without a word (the peer left, went idle, or stopped reading): server control flow."""


def retry_of(exc: BaseException) -> Retry:
    """The one retry decision, for any exception a worker caught.

    A ``SyncError`` decides by its class; an exception group by its first ``SyncError`` (a
    nursery's group carries the error that stopped it); anything else is a bug or a store
    failure: ``Retry.ALWAYS``, so a bug costs time, never an ad.
    """
    if isinstance(exc, SyncError):
        return exc.retry
    if isinstance(exc, BaseExceptionGroup):
        for leaf in exc.exceptions:
            if isinstance(leaf, SyncError | BaseExceptionGroup):
                return retry_of(leaf)
    return Retry.ALWAYS


@contextlib.contextmanager
def unwrap_group() -> Iterator[None]:
    """Re-raise a nursery's exception group that holds only one ``SyncError`` as that error.

    trio wraps whatever stops a nursery in an exception group; an adapter that runs a nursery
    uses this so its callers see the typed error they can catch (``except SyncError``).  Any
    other group (two failures, a cancellation, a bug) goes up unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if isinstance(inner, SyncError):
            raise inner from None
        raise
