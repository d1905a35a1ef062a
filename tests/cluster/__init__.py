"""Real cluster servers for tests and for trying the scale-out by hand (``make cluster``).

Each harness starts real server processes on 127.0.0.1 only, on fixed ports outside the Linux
ephemeral range (checked free first), with its data in a directory it is given; every wait is
bounded, and every process it started is stopped (SIGTERM, then SIGKILL) when it is done.
"""
