"""The OpenAPI 3 document of the find API, served at ``/openapi.json``.

Rules this module keeps:

- Hand-written, and tested: it is valid JSON, every ``$ref`` resolves, and its paths and methods
  are exactly ``handlers.ROUTES`` plus delegated routing's ``indexer.routing.ROUTES`` (served
  beside the find API by the daemon), whose query parameters are the filters it parses.  Change
  a route and this document together.
- It follows ipni/specs ``schemas/v1/openapi.yaml`` (paths, parameter names, the ``cascade``
  query parameter is accepted and ignored) but describes the bodies as go-libipni actually
  marshals them: ``FindResponse`` is an object with ``MultihashResults``, and the batch request
  is ``FindRequest`` (the spec's ``requestBody`` points at ``FindResponse`` by mistake).
- Delegated routing follows ipfs/specs ``http-routing-v1.md`` and IPIP-484: ``Providers`` of
  ``peer`` records (and, for clients older than IPIP-417, ``bitswap`` ones), NDJSON one record
  per line, and a 404 with an empty answer for no records.
- Path parameters carry a ``pattern`` that only well-formed input matches, so a client (or a
  schema-driven fuzzer: ``tests/indexer/find/test_schemathesis.py``) that follows the document is
  never answered 400: every string matching ``PATTERNS`` parses (tested over generated strings).
  The patterns cover the usual forms, sha2-256 multihashes in base58btc (``Qm...``) or hex, CIDs
  as CIDv0 or base32 CIDv1 (raw, dag-pb, dag-cbor, dag-json), Ed25519 and sha2-256 peer IDs in
  base58btc; the server accepts more (any whole multihash, any multibase, ``bafz...`` peer IDs),
  as each description says.  A base58 pattern is a range: ``Qm`` and a third character strictly
  between those of the smallest and the largest 34-byte sha2-256 multihash, so every match
  decodes to ``0x12 0x20`` and 32 digest bytes.  ``EXAMPLES`` are the sha2-256 multihash of
  ``hello ipni``, its raw-codec CID, and a peer ID (go-libipni's pcache fixture provider).
  A batch's multihashes have a pattern too (sha2-256 in padded base64), for the same reason.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

__all__ = ["EXAMPLES", "OPENAPI", "PATTERNS", "openapi_json"]

JsonObj = dict[str, Any]

_B58 = "[1-9A-HJ-NP-Za-km-z]"
_B32 = "[a-z2-7]"
_SHA256_B58 = f"Qm[P-Za-e]{_B58}{{43}}"  # 0x12 0x20 + 32 bytes, base58btc
_SHA256_HEX = "1220[0-9a-fA-F]{64}"
# base32 CIDv1 of a sha2-256 multihash: the codec's fixed prefix, then the digest's characters
# (the last one with its unused low bits zero).
_CIDV1 = (
    f"baf(?:kr|yb|yr)ei[a-h]{_B32}{{50}}[aeimquy4]",  # raw, dag-pb, dag-cbor
    f"baguqeera{_B32}{{51}}[aq]",  # dag-json
)
_ED25519_PEER_B58 = f"12D3KooW[A-HJ-NP-S]{_B58}{{43}}"  # identity multihash of an Ed25519 key
_SHA256_B64 = "Ei[A-D][A-Za-z0-9+/]{42}[AQgw]=="  # the same 34 bytes, padded standard base64
PATTERNS = {
    "multihash": f"^(?:{_SHA256_B58}|{_SHA256_HEX})$",
    "cid": f"^(?:{_SHA256_B58}|{'|'.join(_CIDV1)})$",
    "peerid": f"^(?:{_ED25519_PEER_B58}|{_SHA256_B58})$",
    "batch": f"^{_SHA256_B64}$",
}
EXAMPLES = {
    "multihash": "QmPUK82XwbZTsetQfVUceDiaLZXywPvu3qH5DuAahzJ5b1",
    "cid": "bafkreiaq2ixyomi75nfhxyqwfhyrcqjgtjwwr7no45hbcpj7yjmggr7lhq",
    "peerid": "12D3KooWNSRG5wTShNu6EXCPTkoH7dWsphKAPrbvQchHa5arfsDC",
}
_EXAMPLE_BATCH = {"Multihashes": ["EiAQ0i+HMR/rSnviFinxEUEmmm1o/a7nThE9P8JYY0frPA=="]}


def _ref(name: str) -> JsonObj:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(description: str) -> JsonObj:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _json(description: str, schema: JsonObj) -> JsonObj:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, kind: str, description: str) -> JsonObj:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": PATTERNS[kind]},
        "example": EXAMPLES[kind],
    }


_B64 = {"type": "string", "format": "byte", "description": "padded standard base64"}
_CASCADE = {
    "name": "cascade",
    "in": "query",
    "required": False,
    "description": "Routing systems to cascade to (accepted and ignored: none are offered).",
    "schema": {"type": "string"},
}
_FOUND = {
    "description": "At least one provider was found.",
    "content": {
        "application/json": {"schema": _ref("FindResponse")},
        "application/x-ndjson": {
            "schema": _ref("ProviderResult"),
            "description": "one ProviderResult per line, streamed",
        },
    },
}


def _filter(name: str, description: str) -> JsonObj:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{description} Comma-separated, case-insensitive (IPIP-484).",
        "schema": {"type": "string"},
    }


def _routing(description: str) -> JsonObj:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": _ref("RoutingProviders")},
            "application/x-ndjson": {
                "schema": _ref("RoutingRecord"),
                "description": "one record per line, streamed (asked for by Accept)",
            },
        },
    }


_NOT_ACCEPTABLE = _text("The Accept header lists no media type this route serves.")
_NOT_FOUND = _text("`no results for query`.")


def _find_get(what: str, param: JsonObj) -> JsonObj:
    return {
        "get": {
            "summary": f"Find the providers of a {what}",
            "parameters": [param, _CASCADE],
            "responses": {
                "200": _FOUND,
                "400": _text(f"The {what} is not valid."),
                "404": _NOT_FOUND,
                "406": _NOT_ACCEPTABLE,
            },
        }
    }


_PATHS: JsonObj = {
    "/multihash/{multihash}": _find_get(
        "multihash",
        _path_param(
            "multihash",
            "multihash",
            "A multihash in base58btc or hex.  The pattern describes sha2-256 ones; any whole "
            "multihash is accepted.",
        ),
    ),
    "/cid/{cid}": _find_get(
        "CID",
        _path_param(
            "cid",
            "cid",
            "A CIDv0 or multibase CIDv1.  The pattern describes sha2-256 CIDv0 and base32 CIDv1 "
            "(raw, dag-pb, dag-cbor, dag-json); any CID is accepted, in every multibase "
            "go-multibase decodes (base16, base32, base36, base58btc, base64, base64url, ...).",
        ),
    ),
    "/multihash": {
        "post": {
            "summary": "Find the providers of several multihashes",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("FindRequest"), "example": _EXAMPLE_BATCH}
                },
            },
            "responses": {
                "200": _json("At least one multihash has providers.", _ref("FindResponse")),
                "400": _text("The body or one of its multihashes is not valid."),
                "404": _NOT_FOUND,
                "406": _NOT_ACCEPTABLE,
                "413": _text("The body is over 1 MiB."),
            },
        }
    },
    "/providers": {
        "get": {
            "summary": "List every provider in the registry",
            "responses": {
                "200": _json("The providers.", {"type": "array", "items": _ref("ProviderInfo")}),
                "406": _NOT_ACCEPTABLE,
            },
        }
    },
    "/providers/{peerid}": {
        "get": {
            "summary": "Describe one provider",
            "parameters": [
                _path_param(
                    "peerid",
                    "peerid",
                    "A peer ID in base58btc or as a libp2p-key CIDv1.  The pattern describes "
                    "base58btc Ed25519 and sha2-256 peer IDs; every form is accepted.",
                )
            ],
            "responses": {
                "200": _json("The provider.", _ref("ProviderInfo")),
                "400": _text("The peer ID is not valid."),
                "404": _text("`provider not found`."),
                "406": _NOT_ACCEPTABLE,
            },
        }
    },
    "/health": {
        "get": {
            "summary": "Liveness",
            "responses": {"200": _text("`ready <version>`.")},
        }
    },
    "/stats": {
        "get": {
            "summary": "Index size",
            "responses": {"200": _json("Entry counts.", _ref("Stats")), "406": _NOT_ACCEPTABLE},
        }
    },
    "/routing/v1/providers/{cid}": {
        "get": {
            "summary": "Delegated routing v1: the peers providing a CID",
            "description": "One peer record per provider; extended providers included.",
            "parameters": [
                _path_param(
                    "cid",
                    "cid",
                    "Any CID (v0, or v1 in a multibase); looked up by multihash.  The pattern "
                    "describes sha2-256 CIDv0 and base32 CIDv1; any CID is accepted.",
                ),
                _filter(
                    "filter-protocols",
                    "Keep records with one of these protocols (`unknown`: with none).",
                ),
                _filter(
                    "filter-addrs",
                    "Keep addresses with one of these multiaddr protocols, drop those with a "
                    "`!`-prefixed one (`unknown`: records with no address).",
                ),
            ],
            "responses": {
                "200": _routing("At least one record passed the filters."),
                "400": _text("The CID or a filter is not valid."),
                "404": _routing(
                    'No record: the body is an empty answer (`{"Providers":[]}` or no line).'
                ),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": _json("The OpenAPI document.", {"type": "object"})},
        }
    },
}

_ADDR_INFO = {
    "type": "object",
    "required": ["ID", "Addrs"],
    "properties": {
        "ID": {"type": "string", "description": "peer ID, base58btc"},
        "Addrs": {"type": "array", "items": {"type": "string", "description": "multiaddr"}},
    },
}
_CID_LINK = {
    "type": "object",
    "nullable": True,
    "required": ["/"],
    "properties": {"/": {"type": "string", "description": "CID"}},
}
_METADATAS = {"type": "array", "items": {**_B64, "nullable": True}}
_SCHEMAS: JsonObj = {
    "AddrInfo": _ADDR_INFO,
    "CidLink": _CID_LINK,
    "ProviderResult": {
        "type": "object",
        "description": "Fields are omitted when empty.",
        "properties": {"ContextID": _B64, "Metadata": _B64, "Provider": _ref("AddrInfo")},
    },
    "MultihashResult": {
        "type": "object",
        "required": ["Multihash", "ProviderResults"],
        "properties": {
            "Multihash": _B64,
            "ProviderResults": {"type": "array", "items": _ref("ProviderResult")},
        },
    },
    "FindResponse": {
        "type": "object",
        "properties": {"MultihashResults": {"type": "array", "items": _ref("MultihashResult")}},
    },
    "FindRequest": {
        "type": "object",
        "required": ["Multihashes"],
        "properties": {
            "Multihashes": {
                "type": "array",
                "items": {
                    **_B64,
                    "pattern": PATTERNS["batch"],
                    "description": "a multihash in padded standard base64; the pattern "
                    "describes sha2-256 ones, any whole multihash is accepted",
                },
            }
        },
    },
    "ContextualExtendedProviders": {
        "type": "object",
        "required": ["Override", "ContextID", "Providers"],
        "properties": {
            "Override": {"type": "boolean"},
            "ContextID": {"type": "string", "description": "the context ID's raw bytes"},
            "Providers": {"type": "array", "items": _ref("AddrInfo")},
            "Metadatas": _METADATAS,
        },
    },
    "ExtendedProviders": {
        "type": "object",
        "properties": {
            "Providers": {"type": "array", "items": _ref("AddrInfo")},
            "Contextual": {"type": "array", "items": _ref("ContextualExtendedProviders")},
            "Metadatas": _METADATAS,
        },
    },
    "ProviderInfo": {
        "type": "object",
        "required": ["AddrInfo", "LastAdvertisement", "FrozenAt"],
        "properties": {
            "AddrInfo": _ref("AddrInfo"),
            "LastAdvertisement": _ref("CidLink"),
            "LastAdvertisementTime": {"type": "string", "format": "date-time"},
            "Lag": {
                "type": "integer",
                "minimum": 1,
                "description": "the provider's ads staged and not yet applied (absent: none)",
            },
            "Publisher": _ref("AddrInfo"),
            "ExtendedProviders": _ref("ExtendedProviders"),
            "FrozenAt": _ref("CidLink"),
            "FrozenAtTime": {"type": "string", "format": "date-time"},
            "Inactive": {"type": "boolean", "enum": [True], "description": "absent: active"},
            "LastError": {"type": "string"},
            "LastErrorTime": {
                "type": "string",
                "format": "date-time",
                "description": "when LastError was recorded (RFC 3339)",
            },
        },
    },
    "PeerRecord": {
        "type": "object",
        "description": "A delegated routing `peer` record; each protocol in `Protocols` also "
        "has a field of its own name holding its metadata in padded standard base64.",
        "required": ["Schema", "ID", "Addrs"],
        "properties": {
            "Schema": {"type": "string", "enum": ["peer"]},
            "ID": {"type": "string", "description": "peer ID, base58btc"},
            "Addrs": {"type": "array", "items": {"type": "string", "description": "multiaddr"}},
            "Protocols": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": _B64,
    },
    "BitswapRecord": {
        "type": "object",
        "description": "The pre-IPIP-417 `bitswap` record (boxo's deprecated BitswapRecord), "
        "sent after a bitswap peer's `peer` record to clients that read only these (kubo <= "
        "0.22, boxo < 0.13, by their User-Agent).",
        "required": ["Schema", "Protocol", "ID", "Addrs"],
        "properties": {
            "Schema": {"type": "string", "enum": ["bitswap"]},
            "Protocol": {"type": "string", "enum": ["transport-bitswap"]},
            "ID": {"type": "string", "description": "peer ID, base58btc"},
            "Addrs": {"type": "array", "items": {"type": "string", "description": "multiaddr"}},
        },
        "additionalProperties": False,
    },
    "RoutingRecord": {"oneOf": [_ref("PeerRecord"), _ref("BitswapRecord")]},
    "RoutingProviders": {
        "type": "object",
        "required": ["Providers"],
        "properties": {
            "Providers": {
                "type": "array",
                "items": _ref("RoutingRecord"),
                "description": "at most 100 records",
            }
        },
    },
    "Stats": {
        "type": "object",
        "required": ["EntriesEstimate", "EntriesCount"],
        "properties": {
            "EntriesEstimate": {
                "type": "integer",
                "format": "int64",
                "description": "database size on disk / 40; -1: unknown (a cluster)",
            },
            "EntriesCount": {
                "type": "integer",
                "format": "int64",
                "description": "index entries; -1: unknown (a cluster)",
            },
        },
    },
}

OPENAPI: JsonObj = {
    "openapi": "3.0.3",
    "info": {
        "title": "IPNI find API (ipni-indexer)",
        "description": "The InterPlanetary Network Indexer HTTP query API.",
        "version": "1",
    },
    "externalDocs": {
        "description": "IPNI specification",
        "url": "https://github.com/ipni/specs/blob/main/IPNI.md",
    },
    "paths": _PATHS,
    "components": {"schemas": _SCHEMAS},
}


@cache
def openapi_json() -> bytes:
    """The document, encoded once."""
    return msgspec.json.encode(OPENAPI)
