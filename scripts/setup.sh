#!/usr/bin/env bash
# Set up MoTHer Explorer in ./.venv (idempotent). `--test` adds the test tools and Chromium.
#
# torch is pinned to 2.13.0 here (a CPU build); pyproject.toml keeps an honest range so a user
# with a GPU can install their CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extras="app"
[ "$want_test" = 1 ] && extras="app,test,zoo"  # the zoo tests build typed sets with the real tools

# uv is ~5x faster than pip; it ignores pip's config, so hand it the local wheel folder if any.
.venv/bin/python -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1 || true
links=$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)
if [ -x .venv/bin/uv ]; then
  .venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode ${links:+--find-links "$links"} \
    "torch==2.13.0" -e ".[${extras}]"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[${extras}]"
fi

if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  # Browser tests drive Debian's Chromium through Playwright (never `playwright install`).
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
      || echo "note: could not install chromium; browser tests will be skipped" >&2
  else
    echo "note: run 'sudo apt-get install -y chromium' to enable the browser tests" >&2
  fi
fi
echo "ready: .venv"
