"""The set-up pre-flight says exactly what to install when a build prerequisite is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "check-setup.sh"


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), sys.executable],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_passes_on_this_machine() -> None:
    out = _run()
    assert out.returncode == 0, out.stderr


def test_missing_compiler_names_the_packages() -> None:
    out = _run(CC="/nonexistent/cc")
    assert out.returncode == 1
    assert "apt-get install build-essential libgmp-dev" in out.stderr


def test_missing_gmp_names_the_package(tmp_path: Path) -> None:
    # A "compiler" that fails every build stands in for a machine without gmp.h.
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    out = _run(CC=str(fake))
    assert out.returncode == 1
    assert "apt-get install libgmp-dev" in out.stderr
