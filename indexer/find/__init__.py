"""The IPNI find API: ``/multihash``, ``/cid``, ``/providers``, ``/health``, ``/stats``.

Answers exactly as storetheindex does with go-libipni's ``find/model`` shapes (see ``model.py``),
with extended providers expanded (``expand.py``), over ``sync.net.httpserver`` on trio.

| module | what it holds |
| --- | --- |
| ``model.py`` | the JSON values (msgspec Structs) and Go-identical encoding |
| ``expand.py`` | index values to ``ProviderResult``s, extended providers expanded |
| ``info.py`` | registry records to ``ProviderInfo``; the cached ``/stats`` |
| ``request.py`` | path arguments, the batch body, ``Accept`` negotiation |
| ``handlers.py`` | the routes, ``find_handler`` and ``serve_find`` |
| ``openapi.py`` | the OpenAPI document served at ``/openapi.json`` |

Rules: the API only reads the index (``store.IndexStore``); bad input is a 4xx, never a 500.
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

__all__ = [
    "OPENAPI",
    "ROUTES",
    "AddrInfo",
    "FindRequest",
    "FindResponse",
    "Finder",
    "MultihashResult",
    "ProviderInfo",
    "ProviderResult",
    "Stats",
    "find_handler",
    "provider_info",
    "provider_results",
    "serve_find",
]
