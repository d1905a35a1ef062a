"""Ingest: announces in (``intake``), per-publisher syncs and per-provider workers (``engine``,
``syncs``, ``worker``), applying an ad to the index (``apply``), entries prefetch, progress, fair
slots, supervision and maintenance.

Rules: the invariants of docs/design.md hold here: an ad is staged before latestSync moves, and
one worker per provider applies its ads oldest first, each once.
"""
