#!/usr/bin/env bash
# Pre-flight for `make`: checks what pip cannot install by itself and says exactly what to do.
# py-libp2p needs fastecdsa, which has no wheel and compiles against GMP.
set -u
python=${1:-python3}
fail=0
if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup: $python not found. Install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)." >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "setup: $("$python" --version 2>&1) is too old; Python 3.11 or newer is needed (make PYTHON=python3.11 ...)." >&2
  fail=1
fi
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: the Python venv module is missing. Debian: apt-get install python3-venv" >&2
  fail=1
fi
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "setup: no C compiler ($cc): py-libp2p's fastecdsa must be compiled. Debian: apt-get install build-essential libgmp-dev" >&2
  fail=1
elif ! printf '#include <gmp.h>\nint main(void){return 0;}\n' | "$cc" -x c - -o /dev/null -lgmp >/dev/null 2>&1; then
  echo "setup: the GMP headers/library are missing: py-libp2p's fastecdsa compiles against them. Debian: apt-get install libgmp-dev" >&2
  fail=1
fi
if ! "$python" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)'; then
  echo "setup: the Python headers are missing (needed to compile fastecdsa). Debian: apt-get install python3-dev" >&2
  fail=1
fi
exit $fail
