"""The few protobuf messages libp2p signs with, read and written by hand.

``PublicKey``/``PrivateKey`` (``{1: KeyType, 2: bytes Data}``) and ``Envelope``
(``{1: PublicKey, 2: payload_type, 3: payload, 5: signature}``) use only varint and
length-delimited fields.  Importing py-libp2p for them would cost 1.3-2 s on every CLI start; the
round trip against py-libp2p's own generated code is tested instead.

Rules: fields are written in field-number order (as Go's protobuf does), unknown fields are
skipped on read, and malformed input raises ``DecodeError``.
"""

from __future__ import annotations

from sync.errors import DecodeError
from sync.model.cid import encode_uvarint

__all__ = ["Fields", "encode_fields", "parse_fields"]

# field number -> list of values (int for varint fields, bytes for length-delimited ones)
Fields = dict[int, list[int | bytes]]

_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated protobuf varint")
        if shift > 63:
            raise DecodeError("protobuf varint too long")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def parse_fields(buf: bytes) -> Fields:
    """Parse a protobuf message into its fields; unknown wire types are errors."""
    fields: Fields = {}
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("protobuf field number 0")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise DecodeError("truncated protobuf field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > len(buf):
                raise DecodeError("truncated protobuf field")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        else:
            raise DecodeError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def encode_fields(fields: list[tuple[int, int | bytes]]) -> bytes:
    """Encode ``(number, value)`` pairs; ints as varints, bytes as length-delimited."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += encode_uvarint(number << 3 | _VARINT) + encode_uvarint(value)
        else:
            out += encode_uvarint(number << 3 | _LEN) + encode_uvarint(len(value)) + value
    return bytes(out)
