"""The ``IndexBackend`` conformance suite (LevelDB and a real Valkey cluster) and cluster tests."""
