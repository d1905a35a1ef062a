"""Sync: everything IPNI says on the wire, and the walk of one publisher's chain.

Subpackages: ``model`` (CIDs, codecs, schema, metadata, peer IDs), ``crypto`` (keys, envelopes,
signatures), ``announce`` (the message, HTTP sender, gossipsub), ``ipnisync`` (head, fetch,
routes, multiaddr URLs), ``walk`` (chain and entries walkers, lookahead, one sync), ``net``
(HTTP server and client, libp2p; no IPNI in it); ``errors`` is the one error tree.  This module
re-exports the model's and the crypto's most used names.  The package may import ``staging``
and ``store`` but never ``indexer``.
"""

from sync.announce.message import Message
from sync.crypto.keys import KeyType, PrivateKey, PublicKey
from sync.crypto.signing import AdSignature, sign_advertisement, verify_advertisement
from sync.errors import (
    BadCid,
    BadEnvelope,
    BadMultiaddr,
    BadPeerId,
    DecodeError,
    FieldTooLarge,
    HashMismatch,
    ModelError,
    SchemaError,
    SignatureError,
    SyncError,
    TransientError,
    UnknownCodec,
    UnsupportedKeyType,
)
from sync.ipnisync.head import SignedHead
from sync.model.blocks import (
    BlockKind,
    classify,
    decode_node,
    encode_block,
    load_advertisement,
    load_entry_chunk,
)
from sync.model.cid import DAG_CBOR, DAG_JSON, Link, Multihash, check_block, parse_multihash
from sync.model.metadata import Metadata, decode_metadata
from sync.model.peer import PeerId
from sync.model.schema import (
    MAX_CONTEXT_ID_LEN,
    MAX_METADATA_LEN,
    NO_ENTRIES,
    Advertisement,
    EntryChunk,
    ExtendedProvider,
    Provider,
)

__all__ = [
    "DAG_CBOR",
    "DAG_JSON",
    "MAX_CONTEXT_ID_LEN",
    "MAX_METADATA_LEN",
    "NO_ENTRIES",
    "AdSignature",
    "Advertisement",
    "BadCid",
    "BadEnvelope",
    "BadMultiaddr",
    "BadPeerId",
    "BlockKind",
    "DecodeError",
    "EntryChunk",
    "ExtendedProvider",
    "FieldTooLarge",
    "HashMismatch",
    "KeyType",
    "Link",
    "Message",
    "Metadata",
    "ModelError",
    "Multihash",
    "PeerId",
    "PrivateKey",
    "Provider",
    "PublicKey",
    "SchemaError",
    "SignatureError",
    "SignedHead",
    "SyncError",
    "TransientError",
    "UnknownCodec",
    "UnsupportedKeyType",
    "check_block",
    "classify",
    "decode_metadata",
    "decode_node",
    "encode_block",
    "load_advertisement",
    "load_entry_chunk",
    "parse_multihash",
    "sign_advertisement",
    "verify_advertisement",
]
