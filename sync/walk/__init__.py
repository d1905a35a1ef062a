"""Walking a publisher's chain: the sans-I/O chain and entries walkers, one speculative fetch
ahead, and the syncer that drives them against a fetcher.

Rules: ``chain`` and ``entries`` are pure code that names the next block it needs; only
``lookahead`` and ``syncer`` await anything.
"""
