"""The ``indexer`` command line: one module per command group (``daemon``, ``admin``, ``find``,
``ingest``, ``ad``, ``publisher``, ``serve``); ``main`` builds the parser.
"""
