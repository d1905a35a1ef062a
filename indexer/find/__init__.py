"""The IPNI find API: ``/multihash``, ``/cid``, ``/providers``, ``/health``, ``/stats``.

Answers exactly as storetheindex does with go-libipni's ``find/model`` shapes (see ``model.py``),
with extended providers expanded (``expand.py``), over ``sync.net.httpserver`` on trio.

| module | what it holds |
| --- | --- |
| ``model.py`` | the JSON values (msgspec Structs) and Go-identical encoding |
| ``expand.py`` | index values to ``ProviderResult``s, extended providers expanded |
| ``info.py`` | registry records to ``ProviderInfo``; the cached ``/stats`` |
| ``reader.py`` | ``IndexReader``, the async seam every read goes through, and its adapters |
| ``request.py`` | path arguments, the batch body, ``Accept`` negotiation |
| ``handlers.py`` | the routes, ``find_handler`` and ``serve_find`` |
| ``openapi.py`` | the OpenAPI document served at ``/openapi.json`` |

Rules: the API only reads the index, through an ``IndexReader``; bad input is a 4xx, never a
500.  ``find_handler(index, version)`` / ``serve_find(index, ...)`` take a single node's
``store.IndexStore`` (wrapped in a ``StoreReader``: registry cached per ``kv.version``, as before)
or any ``IndexReader``, e.g. ``BackendReader(backend)`` over a cluster's
``store.cluster.IndexBackend`` (registry cached for a short bound).
"""

from indexer.find.expand import Finder, provider_results
from indexer.find.handlers import ROUTES, find_handler, serve_find
from indexer.find.info import provider_info
from indexer.find.model import (
    AddrInfo,
    FindRequest,
    FindResponse,
    MultihashResult,
    ProviderInfo,
    ProviderResult,
    Stats,
)
from indexer.find.openapi import OPENAPI
from indexer.find.reader import BackendReader, IndexReader, StoreReader, as_reader

__all__ = [
    "OPENAPI",
    "ROUTES",
    "AddrInfo",
    "BackendReader",
    "FindRequest",
    "FindResponse",
    "Finder",
    "IndexReader",
    "MultihashResult",
    "ProviderInfo",
    "ProviderResult",
    "Stats",
    "StoreReader",
    "as_reader",
    "find_handler",
    "provider_info",
    "provider_results",
    "serve_find",
]
