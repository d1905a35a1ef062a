"""Reading a find request: path arguments, the batch body, and ``Accept`` negotiation.

Rules this module keeps (storetheindex ``server/find/server.go`` and
``internal/httpserver/header.go``; go-multihash ``FromB58String``/``FromHexString``/``Cast``;
go-libp2p ``peer.Decode``; go-cid ``Decode``):

- A multihash path argument is base58btc, else hex; either way it must be one whole multihash
  (code, length, exactly that many digest bytes).  Failing both: 400 ``find: input is not a valid
  base58 or hex encoded multihash``.
- A CID is CIDv0 (``Qm...``) or a CIDv1 in any multibase go-multibase decodes (base2, 8, 10, 16,
  32 and its hex/padded/upper forms, 36, 58btc, 58flickr, 64 raw/padded/url, base256emoji,
  identity; not base45, proquint nor base32z); its multihash is looked up.  A peer ID is base58
  (``12D3KooW...``, ``Qm...``) or a ``libp2p-key`` CIDv1.  Either failing: 400 with the reason.
- The batch body is ``{"Multihashes": [base64...]}``; malformed JSON or a malformed multihash in
  it is a 400 naming the problem.
- ``Accept``: absent means the default (JSON).  Otherwise every comma-separated media type must
  parse (else 406 ``invalid accept header: ...``) and the first offered type present in it wins,
  in the server's order of preference (so NDJSON wins whenever a client lists it); parameters such
  as ``q`` are ignored.  No offered type listed: 406 ``accept: <offered>``.  The answer to each
  (short ``Accept``, offer) pair is remembered (a bounded dict): it depends on nothing else.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import multibase as py_multibase
from multiformats import multibase

from indexer.find.model import FindRequest
from sync import Link, PeerId
from sync.errors import BadCid, BadPeerId
from sync.model.cid import parse_multihash
from sync.net.httpserver import Request, Response

__all__ = [
    "JSON",
    "NDJSON",
    "BadInput",
    "b58decode",
    "batch_multihashes",
    "multibase_decode",
    "negotiate",
    "parse_cid",
    "parse_multihash_text",
    "parse_peer",
]

NDJSON = "application/x-ndjson"
JSON = "application/json"

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA = re.compile(rf"({_TOKEN})(?:/({_TOKEN}))?")
_PARAM = re.compile(rf'{_TOKEN}\s*=\s*(?:{_TOKEN}|"(?:[^"\\]|\\.)*")')


@dataclass(frozen=True, slots=True)
class BadInput:
    """Input found wanting: answered 400 with ``message``."""

    message: str

    def response(self) -> Response:
        return Response.text(400, self.message)


def _whole_multihash(raw: bytes) -> bool:
    if len(raw) == 34 and raw[0] == 0x12 and raw[1] == 32:  # sha2-256: nearly every one asked
        return True
    try:
        _, end = parse_multihash(raw)
    except BadCid:
        return False
    return len(raw) >= 2 and end == len(raw)


_B58_ALPHABET = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_DIGITS = bytes.maketrans(
    _B58_ALPHABET + bytes(b for b in range(256) if b not in _B58_ALPHABET),
    bytes(range(58)) + b"\xff" * (256 - 58),
)


def b58decode(text: str) -> bytes:
    """base58btc text to bytes, as ``base58.b58decode`` (trailing whitespace ignored, each
    leading ``1`` a zero byte; anything else outside the alphabet a ``ValueError``), about five
    times faster: the digits come from one ``translate``, and the bytes from ``int.to_bytes``
    rather than a ``divmod`` per byte."""
    stripped = text.rstrip().encode("ascii")  # UnicodeEncodeError is a ValueError
    digits = stripped.translate(_B58_DIGITS)
    if b"\xff" in digits:
        raise ValueError("invalid base58 character")
    value = 0
    for digit in digits:
        value = value * 58 + digit
    zeros = len(stripped) - len(stripped.lstrip(b"1"))
    return bytes(zeros) + value.to_bytes((value.bit_length() + 7) // 8, "big")


def parse_multihash_text(text: str) -> bytes | BadInput:
    """A multihash from base58btc or hex text."""
    try:
        raw = b58decode(text) if text else b""
    except ValueError:
        raw = b""
    if _whole_multihash(raw):
        return raw
    if _HEX.fullmatch(text) and _whole_multihash(raw := bytes.fromhex(text)):
        return raw
    return BadInput("find: input is not a valid base58 or hex encoded multihash")


# go-multibase's ``Decode``: every prefix it decodes, by the ``multiformats`` encoding's name
# (base45 is named there but not decoded; multiformats' proquint and base32z are not Go's).
_GO_MULTIBASE = {
    "0": "base2", "7": "base8", "9": "base10", "f": "base16", "F": "base16upper",
    "b": "base32", "B": "base32upper", "c": "base32pad", "C": "base32padupper",
    "v": "base32hex", "V": "base32hexupper", "t": "base32hexpad", "T": "base32hexpadupper",
    "k": "base36", "K": "base36upper", "z": "base58btc", "Z": "base58flickr",
    "m": "base64", "u": "base64url", "M": "base64pad", "U": "base64urlpad",
}  # fmt: skip
_EMOJI = "\U0001f680"  # base256emoji's prefix


def _padding_ok(prefix: str, body: str) -> bool:
    """Go's raw base64 (``m``, ``u``) refuses ``=``; its padded base64 (``M``, ``U``) needs it."""
    if prefix in "mu":
        return "=" not in body
    return prefix not in "MU" or len(body) % 4 == 0


def multibase_decode(text: str) -> bytes:
    """Bytes of a multibase string, for every encoding go-multibase decodes; else ``ValueError``
    (identity: the rest of the string's UTF-8 bytes, as Go's ``[]byte(data[1:])``)."""
    if not text:
        raise ValueError("cannot decode multibase for zero length string")
    prefix = text[0]
    if prefix == "\x00":
        return text[1:].encode()
    try:
        if prefix == _EMOJI:
            return bytes(py_multibase.decode(text))
        name = _GO_MULTIBASE.get(prefix)
        if name is None or not _padding_ok(prefix, text[1:]):
            raise ValueError(f"unsupported or malformed multibase {prefix!r}")
        return bytes(multibase.get(name).decode(text))
    except (ValueError, KeyError, TypeError, multibase.err.MultibaseValueError) as exc:
        raise ValueError(f"selected encoding not supported or malformed: {exc}") from None


def parse_cid(text: str) -> bytes | BadInput:
    """The multihash of a CID given as text: CIDv0, or a CIDv1 in any multibase go-multibase
    decodes (go-cid ``Decode``)."""
    try:
        if len(text) == 46 and text.startswith("Qm"):
            return Link.parse(text).multihash.raw
        try:
            raw = multibase_decode(text)
        except ValueError as exc:
            raise BadCid(f"bad CID {text[:64]!r}: {exc}") from None
        return Link.from_bytes(raw).multihash.raw
    except BadCid as exc:
        return BadInput(f"find: {exc}")


def parse_peer(text: str) -> PeerId | BadInput:
    try:
        return PeerId.parse(text)
    except BadPeerId as exc:
        return BadInput(f"cannot decode provider id: {exc}")


_FIRST_TWO = operator.itemgetter(slice(0, 2))
_SHA2_256 = {b"\x12\x20"}
_SHA2_256_LEN = {34}
_batch_decoder = msgspec.json.Decoder(FindRequest)


def _all_sha2_256(multihashes: list[bytes]) -> bool:
    """Whether every one is a whole sha2-256 multihash, nearly every batch: checked without a
    Python call per multihash (``map`` of C functions)."""
    return set(map(len, multihashes)) == _SHA2_256_LEN and (
        set(map(_FIRST_TWO, multihashes)) == _SHA2_256
    )


def batch_multihashes(body: bytes) -> list[bytes] | BadInput:
    """The multihashes of a batch ``POST /multihash`` body."""
    try:
        request = _batch_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return BadInput(f"find: bad batch request: {exc}")
    multihashes = request.multihashes or []
    if _all_sha2_256(multihashes) or all(map(_whole_multihash, multihashes)):
        return multihashes
    i = next(i for i, mh in enumerate(multihashes) if not _whole_multihash(mh))
    return BadInput(f"find: Multihashes[{i}] is not a valid multihash")


def _params_ok(rest: str) -> bool:
    """``; name=value`` pairs, a trailing ``;`` allowed (Go's ``mime.ParseMediaType``)."""
    while rest := rest.lstrip():
        if not rest.startswith(";"):
            return False
        rest = rest[1:].lstrip()
        if not rest:
            return True
        match = _PARAM.match(rest)
        if match is None:
            return False
        rest = rest[match.end() :]
    return True


def _media_type(part: str) -> str | None:
    base, semi, params = part.partition(";")
    match = _MEDIA.fullmatch(base.strip())
    if match is None or not _params_ok(semi + params):
        return None
    kind, sub = match.group(1).lower(), match.group(2)
    return kind if sub is None else f"{kind}/{sub.lower()}"


_NEGOTIATED_MAX = 256  # distinct (Accept, offered) pairs remembered (then started afresh)
_NEGOTIATED_LEN = 256  # longer Accept values are parsed every time, never remembered
_negotiated: dict[tuple[str, tuple[str, ...]], str | Response] = {}


def negotiate(request: Request, offered: Sequence[str]) -> str | Response:
    """The first offered media type the client accepts ("" without Accept), or a 406.

    A pure function of the header and the offer, so each pair's answer is remembered: clients
    send the same few ``Accept`` values, and parsing one costs several regex matches.
    """
    if "accept" not in request.headers:
        return ""
    accept = request.headers["accept"]
    if len(accept) > _NEGOTIATED_LEN:
        return _negotiate(accept, offered)
    key = (accept, tuple(offered))
    answer = _negotiated.get(key)
    if answer is None:
        if len(_negotiated) >= _NEGOTIATED_MAX:
            _negotiated.clear()
        answer = _negotiated[key] = _negotiate(accept, offered)
    return answer


def _negotiate(accept: str, offered: Sequence[str]) -> str | Response:
    listed = set()
    for part in accept.split(","):
        media = _media_type(part)
        if media is None:
            message = f"invalid accept header: mime: cannot parse {part.strip()!r}"
            return Response.text(406, message)
        listed.add(media)
    for media in offered:
        if media in listed:
            return media
    return Response.text(406, "accept: " + ", ".join(offered))
