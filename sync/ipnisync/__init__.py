"""The ipnisync protocol: its constants, the signed head, the indexer-side block fetch, the
publisher-side routes, and multiaddr -> URL resolution (go-libipni ``dagsync/ipnisync``, ``maurl``).

Rules: the client side (``fetch``, ``maurl``) imports ``protocol`` for the wire constants,
never the server's ``routes``.
"""
