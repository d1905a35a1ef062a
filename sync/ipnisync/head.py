"""The ipnisync SignedHead (go-libipni ``dagsync/ipnisync/head``).

Rules this module keeps:

- Schema ``{head Link, topic optional String, pubkey Bytes, sig Bytes}``, always dag-json.
- The signature is the publisher key's plain signature (no envelope) of the head CID's bytes
  followed by the UTF-8 topic when one is present.
- ``verify`` returns the signer's peer ID; it raises ``SignatureError`` (never returns False).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sync.crypto.keys import PrivateKey, PublicKey
from sync.errors import BadEnvelope, BadPeerId, SchemaError, SignatureError
from sync.model import dagjson
from sync.model.cid import Link
from sync.model.fields import check_keys, get_field
from sync.model.peer import PeerId

__all__ = ["SignedHead"]


@dataclass(frozen=True, slots=True)
class SignedHead:
    head: Link
    pubkey: bytes
    sig: bytes
    topic: str | None = None

    @classmethod
    def create(cls, head: Link, key: PrivateKey, topic: str | None = None) -> SignedHead:
        data = head.raw + (topic.encode() if topic else b"")
        return cls(head=head, pubkey=key.public_key().marshal(), sig=key.sign(data), topic=topic)

    @classmethod
    def from_node(cls, node: Any) -> SignedHead:
        what = "SignedHead"
        n = check_keys(node, what, {"head", "pubkey", "sig"}, {"topic"})
        return cls(
            head=get_field(n, "head", Link, what),
            pubkey=get_field(n, "pubkey", bytes, what),
            sig=get_field(n, "sig", bytes, what),
            topic=get_field(n, "topic", str, what) if "topic" in n else None,
        )

    @classmethod
    def decode(cls, raw: bytes) -> SignedHead:
        return cls.from_node(dagjson.decode(raw))

    def to_node(self) -> dict[str, Any]:
        node: dict[str, Any] = {"head": self.head, "pubkey": self.pubkey, "sig": self.sig}
        if self.topic is not None:
            node["topic"] = self.topic
        return node

    def encode(self) -> bytes:
        return dagjson.encode(self.to_node())

    def verify(self) -> PeerId:
        if not self.sig:
            raise BadEnvelope("signed head has no signature")
        if not self.pubkey:
            raise BadEnvelope("signed head has no public key")
        try:
            key = PublicKey.unmarshal(self.pubkey)
        except BadPeerId as exc:
            raise SchemaError(f"signed head public key: {exc}") from None
        data = self.head.raw + (self.topic.encode() if self.topic else b"")
        if not key.verify(data, self.sig):
            raise SignatureError("signed head signature does not verify")
        return key.peer_id()
