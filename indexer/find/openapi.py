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
  ``peer`` records, NDJSON one record per line, and a 404 with an empty answer for no records.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

__all__ = ["OPENAPI", "openapi_json"]

JsonObj = dict[str, Any]


def _ref(name: str) -> JsonObj:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(description: str) -> JsonObj:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _json(description: str, schema: JsonObj) -> JsonObj:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, description: str) -> JsonObj:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
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
                "schema": _ref("PeerRecord"),
                "description": "one PeerRecord per line, streamed (asked for by Accept)",
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
        "multihash", _path_param("multihash", "A multihash in base58btc or hex.")
    ),
    "/cid/{cid}": _find_get("CID", _path_param("cid", "A CIDv0 or multibase CIDv1.")),
    "/multihash": {
        "post": {
            "summary": "Find the providers of several multihashes",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("FindRequest")}},
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
                _path_param("peerid", "A peer ID in base58btc or as a libp2p-key CIDv1.")
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
                _path_param("cid", "Any CID (v0, or v1 in a multibase); looked up by multihash."),
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
        "properties": {"Multihashes": {"type": "array", "items": _B64}},
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
            "Lag": {"type": "integer"},
            "Publisher": _ref("AddrInfo"),
            "ExtendedProviders": _ref("ExtendedProviders"),
            "FrozenAt": _ref("CidLink"),
            "FrozenAtTime": {"type": "string", "format": "date-time"},
            "Inactive": {"type": "boolean"},
            "LastError": {"type": "string"},
            "LastErrorTime": {"type": "string", "format": "date-time"},
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
    "RoutingProviders": {
        "type": "object",
        "required": ["Providers"],
        "properties": {
            "Providers": {
                "type": "array",
                "items": _ref("PeerRecord"),
                "description": "at most 100 records",
            }
        },
    },
    "Stats": {
        "type": "object",
        "required": ["EntriesEstimate", "EntriesCount"],
        "properties": {
            "EntriesEstimate": {"type": "integer", "format": "int64"},
            "EntriesCount": {"type": "integer", "format": "int64"},
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
