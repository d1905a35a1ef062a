"""Identities and signatures: peer IDs, libp2p keys, signed envelopes, advertisement signing.

Rules: pure code (no I/O library, enforced by import-linter); every signature is checked over
the exact bytes received.
"""
