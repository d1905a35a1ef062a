"""Delegated routing v1: ``GET /routing/v1/providers/{cid}`` answered from the index.

Three modules, one job each: ``records`` turns a multihash's index values into one ``peer``
record per provider (extended providers expanded, metadata decoded into protocols), ``filters``
applies IPIP-484's ``filter-protocols`` and ``filter-addrs``, and ``handler`` speaks HTTP (paths,
methods, JSON or streamed NDJSON, status codes, caching and CORS headers).  ``routing_handler``
answers every path under ``/routing/v1/`` and 404 elsewhere: mount it by that prefix beside the
find API.
"""

from indexer.routing.filters import BadFilter, Filters
from indexer.routing.handler import PREFIX, ROUTES, routing_handler
from indexer.routing.records import Index, PeerRecord, find_records

__all__ = [
    "PREFIX",
    "ROUTES",
    "BadFilter",
    "Filters",
    "Index",
    "PeerRecord",
    "find_records",
    "routing_handler",
]
