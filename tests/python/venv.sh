#!/usr/bin/env bash
# Creates or refreshes the Python venv the client and HL7 v2 tests use (fhirpy, fhirclient,
# schemathesis, hl7, smart-fetch, pinned in requirements.txt beside this script). Idempotent: a venv built from the same
# requirements with the same python3 is left as it is, so calling it before every run is cheap.
# The venv lives outside the clone: $PORTICO_TEST_VENV, default $HOME/.cache/portico-venv.
# Needs python3 with its venv module, and PyPI on the first run. Prints the venv's path.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${PORTICO_TEST_VENV:-$HOME/.cache/portico-venv}"
requirements="$here/requirements.txt"

if ! command -v python3 >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
  else
    echo "venv.sh: python3 is required for the client tests" >&2
    exit 1
  fi
fi
mkdir -p "$(dirname "$venv")"
# One builder at a time (CI and a test binary may both ask).
exec 9>"$venv.lock"
flock 9

wanted="$(sha256sum "$requirements" | cut -d' ' -f1) $(python3 --version 2>&1)"
stamp="$venv/.portico-requirements"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  echo "$venv"
  exit 0
fi

echo "venv.sh: building $venv from $requirements" >&2
if ! python3 -m venv --clear "$venv" >&2; then
  # Debian's python3 keeps ensurepip in a separate package.
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    minor="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$minor-venv" >&2
    python3 -m venv --clear "$venv" >&2
  else
    echo "venv.sh: python3 cannot create a venv (install its venv module)" >&2
    exit 1
  fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
echo "$wanted" > "$stamp"
echo "$venv"
