"""Real clustered servers on 127.0.0.1 for tests and for trying scale-out by hand."""
