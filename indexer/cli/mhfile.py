"""Reading the multihash list a publisher publishes: one multihash or CID per line.

Accepted per line (surrounding blanks ignored; empty lines and ``#`` comments skipped): a CID in
any multibase (its multihash is taken), a base58btc multihash, a hex multihash, or a multibase
(``b...`` base32, ``z...`` base58, ``f...`` hex) multihash.  Every line is checked; the result
lists all bad lines with their numbers, so a caller can refuse the whole file in one report.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import base58

from sync import BadCid, Link, parse_multihash

__all__ = ["BadLine", "parse_multihash_line", "read_multihashes"]

_HEX = set(string.hexdigits)


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    text: str
    reason: str


def _whole_multihash(raw: bytes) -> bytes:
    mh, end = parse_multihash(raw)
    if end != len(raw):
        raise BadCid("trailing bytes after the multihash")
    if not mh.digest:
        raise BadCid("empty digest")
    return raw


def _decoders(text: str) -> list[Callable[[], bytes]]:
    """Ways to read ``text``, cheapest and most likely first; each may raise."""
    prefix, body = text[0], text[1:]
    ways: list[Callable[[], bytes]] = []
    if len(text) % 2 == 0 and set(text) <= _HEX:
        ways.append(lambda: bytes.fromhex(text))
    ways.append(lambda: Link.parse(text).multihash.raw)
    ways.append(lambda: base58.b58decode(text))
    if prefix in "bB":
        ways.append(lambda: base64.b32decode(body.upper() + "=" * (-len(body) % 8)))
    elif prefix == "z":
        ways.append(lambda: base58.b58decode(body))
    elif prefix == "f":
        ways.append(lambda: bytes.fromhex(body))
    return ways


def parse_multihash_line(text: str) -> bytes:
    """The multihash a line names; ``BadCid`` with the reason when it names none."""
    for decode in _decoders(text):
        try:
            return _whole_multihash(decode())
        except (BadCid, ValueError):
            continue
    raise BadCid("not a CID, nor a base58, base32 or hex multihash")


def read_multihashes(lines: Iterable[str]) -> tuple[list[bytes], list[BadLine]]:
    """Every multihash in ``lines`` and every line that is not one."""
    good: list[bytes] = []
    bad: list[BadLine] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            good.append(parse_multihash_line(text))
        except BadCid as exc:
            bad.append(BadLine(number, text[:80], str(exc)))
    return good, bad
