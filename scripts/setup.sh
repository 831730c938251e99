#!/usr/bin/env bash
# Install sam-lite into .venv (created if missing).
#   bash scripts/setup.sh          the package, to run the demo / CLI / training
#   bash scripts/setup.sh --test   plus the test dependencies, and Chromium (apt, when run as root) for the browser test
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

with_test=0
for arg in "$@"; do
    case "$arg" in
        --test) with_test=1 ;;
        -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown option '$arg' (use --test or --help)" >&2; exit 2 ;;
    esac
done

if [ ! -x .venv/bin/python ]; then
    python="${PYTHON:-}"
    if [ -z "$python" ]; then
        for candidate in python3.11 python3.12 python3.10 python3; do
            if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
        done
    fi
    if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "setup.sh: need Python >= 3.10 (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "== creating .venv with $python"
    "$python" -m venv .venv
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if [ "$with_test" = 1 ]; then
    echo "== pip install -e .[test]"
    .venv/bin/python -m pip install -q -e ".[test]"
else
    echo "== pip install -e ."
    .venv/bin/python -m pip install -q -e .
fi

if [ "$with_test" = 1 ] && ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Chromium for the browser test (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "warning: Chromium is not installed and this is not root: the browser test will be skipped." >&2
        echo "         Install it with: sudo apt-get install -y chromium" >&2
    fi
fi
echo "== done: .venv is ready"
