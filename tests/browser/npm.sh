#!/usr/bin/env bash
# Installs the npm side of the browser test (tests/browser.rs): fhirclient and puppeteer-core,
# pinned by package-lock.json beside this script, with `npm ci` into a folder outside the clone
# ($PORTICO_TEST_NPM, default $HOME/.cache/portico-npm). Idempotent: a folder installed from the
# same lock file with the same node is left as it is, so calling it before every run is cheap.
# No browser is downloaded (puppeteer-core drives Debian's /usr/bin/chromium); install scripts are
# not run. Needs node and npm, and the npm registry on the first run. Prints the folder's path.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target="${PORTICO_TEST_NPM:-$HOME/.cache/portico-npm}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
  else
    echo "npm.sh: node and npm are required for the browser test" >&2
    exit 1
  fi
fi
mkdir -p "$target"
# One installer at a time (CI and a test binary may both ask).
exec 9>"$target.lock"
flock 9

wanted="$(cat "$here/.npmrc" "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1) node $(node --version)"
stamp="$target/.portico-lock"
if [ -d "$target/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  echo "$target"
  exit 0
fi

echo "npm.sh: installing into $target from $here/package-lock.json" >&2
rm -f "$stamp"
cp "$here/.npmrc" "$here/package.json" "$here/package-lock.json" "$target/"
(cd "$target" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$wanted" > "$stamp"
echo "$target"
