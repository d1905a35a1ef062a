"""The retry decision: one per error class, pinned here so a change to it is a visible choice."""

from __future__ import annotations

import inspect

import pytest

from sync import errors
from sync.errors import Retry, SyncError, retry_of

# Every class of the tree, and what a worker does about it (storetheindex's ingest error kinds).
EXPECTED = {
    "SyncError": Retry.NEVER,
    "ModelError": Retry.NEVER,
    "BadCid": Retry.NEVER,
    "HashMismatch": Retry.LIMITED,
    "UnknownCodec": Retry.NEVER,
    "DecodeError": Retry.NEVER,
    "SchemaError": Retry.NEVER,
    "FieldTooLarge": Retry.NEVER,
    "RepeatedLink": Retry.NEVER,
    "BadPeerId": Retry.NEVER,
    "BadMultiaddr": Retry.NEVER,
    "BlockTooLarge": Retry.NEVER,
    "ResponseTooLarge": Retry.NEVER,  # the libp2p transport's cap: the fetcher's BlockTooLarge
    "ChainTooLong": Retry.NEVER,
    "EntriesOverBudget": Retry.NEVER,
    "SignatureError": Retry.NEVER,
    "BadEnvelope": Retry.NEVER,
    "UnsupportedKeyType": Retry.NEVER,
    "PublisherError": Retry.NEVER,
    "NotInitialized": Retry.NEVER,
    "AlreadyInitialized": Retry.NEVER,
    "UnknownContext": Retry.NEVER,
    "PolicyError": Retry.NEVER,
    "TransientError": Retry.ALWAYS,
    "FetchFailed": Retry.ALWAYS,
    "TransportFailed": Retry.ALWAYS,  # one address failed: the fetcher tries the next first
    "BlockNotFound": Retry.LIMITED,
    "AddressRefused": Retry.ALWAYS,  # this indexer's setting, not the ads: keep them, retry
    "DecoderDied": Retry.LIMITED,  # a block that crashes the decoder every time must end
    "Refusal": Retry.NEVER,  # HTTP server control flow: never reaches a worker
    "Hangup": Retry.NEVER,  # HTTP server control flow: never reaches a worker
}
ARGS: dict[str, tuple[object, ...]] = {"Refusal": (400, "x")}

CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if inspect.isclass(cls) and issubclass(cls, SyncError)
}


def test_every_class_is_pinned() -> None:
    assert set(CLASSES) == set(EXPECTED), "a new error class needs its retry decision pinned here"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classification(name: str) -> None:
    exc = CLASSES[name](*ARGS.get(name, ("x",)))
    assert retry_of(exc) is EXPECTED[name]
    assert exc.permanent is (EXPECTED[name] is Retry.NEVER)


def test_a_group_is_classified_by_the_error_inside() -> None:
    group = ExceptionGroup("nursery", [errors.BadCid("x")])
    assert retry_of(group) is Retry.NEVER
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [errors.FetchFailed("x")])])
    assert retry_of(nested) is Retry.ALWAYS


def test_a_bug_is_retried_never_skipped() -> None:
    assert retry_of(KeyError("bug")) is Retry.ALWAYS
    assert retry_of(ExceptionGroup("g", [ZeroDivisionError()])) is Retry.ALWAYS
