"""Transports with no IPNI in them: the hardened HTTP/1.1 server, the one HTTP client stack
(httpcore over TCP, TLS, proxies and libp2p streams), py-libp2p hosts and HTTP over libp2p
streams.

Rules: nothing here imports an IPNI module (enforced by import-linter); ``p2p`` and ``p2phttp``
import py-libp2p (1.3-2 s): import them lazily.
"""
