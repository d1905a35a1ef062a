"""Announces: the message in both wire forms, the HTTP sender, and gossipsub.

Rules: ``message`` is pure; ``sender`` and ``gossip`` are the adapters that put it on a wire.
``gossip`` imports py-libp2p: import it lazily.
"""
