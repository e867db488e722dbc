#!/usr/bin/env bash
# The project's one test command: builds tollgate (debug), runs every Rust
# test, then the Python end-to-end tests (the official OpenAI SDK against a
# real `tollgate serve`, and each provider's official SDK against the
# wire-format mocks) in a virtualenv at .venv, then the Node SDK tests.
#
#   scripts/test.sh
#
# Environment: PYTHON (default python3) picks the interpreter; VENV (default
# .venv) the virtualenv; TOLLGATE_BIN overrides the binary the Python tests run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
REQUIREMENTS="tests/python/requirements.txt"

step() { printf '\n==> %s\n' "$*"; }
failed=()

step "cargo build (debug): the gateway, and the provider mocks the Python tests drive"
cargo build --locked --bins --examples

step "cargo test"
if ! cargo test --locked; then
    failed+=("cargo test")
fi

step "Python environment ($VENV)"
# A usable venv has a python that runs and a pip.
venv_ok() { "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }
make_venv() { rm -rf "$VENV" && "$PY" -m venv "$VENV" && venv_ok; }

if venv_ok || make_venv; then
    pytest_python="$VENV/bin/python"
    pip_install=("$pytest_python" -m pip install --quiet)
else
    # Debian's python3 without python3-venv has no ensurepip. Install it when
    # we may (root, apt-get, Debian's own interpreter); otherwise install the
    # test dependencies for the user.
    rm -rf "$VENV"
    base_prefix="$("$PY" -c 'import sys; print(sys.base_prefix)')"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "$base_prefix" = /usr ]; then
        venv_pkgs=()
        wanted=(python3-venv "$("$PY" -c 'import sys; print("python3.%d-venv" % sys.version_info[1])')")
        "$PY" -m pip --version >/dev/null 2>&1 || wanted+=(python3-pip)
        for pkg in "${wanted[@]}"; do
            # Install only what is missing: never upgrade the system's Python as a side effect.
            if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]; then
                venv_pkgs+=("$pkg")
            fi
        done
        if [ ${#venv_pkgs[@]} -gt 0 ]; then
            echo "python3 -m venv failed: installing ${venv_pkgs[*]} with apt-get"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${venv_pkgs[@]}" >/dev/null || true
        fi
    fi
    if make_venv; then
        pytest_python="$VENV/bin/python"
        pip_install=("$pytest_python" -m pip install --quiet)
    else
        rm -rf "$VENV"
        echo "no virtualenv available: installing the test dependencies with pip --user"
        pytest_python="$PY"
        pip_install=("$PY" -m pip install --quiet --user --no-warn-script-location)
        # PEP 668: a distribution's Python refuses user installs unless told.
        if "$PY" -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
            pip_install+=(--break-system-packages)
        fi
    fi
fi
"${pip_install[@]}" -r "$REQUIREMENTS"

step "pytest tests/python"
if [ -z "${TOLLGATE_BIN:-}" ]; then
    # Where cargo put the binary, honouring CARGO_TARGET_DIR and .cargo/config.
    target_dir="$(cargo metadata --format-version 1 --no-deps | "$pytest_python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    export TOLLGATE_BIN="$target_dir/debug/tollgate"
    export MOCK_PROVIDERS_BIN="${MOCK_PROVIDERS_BIN:-$target_dir/debug/examples/mock_providers}"
fi
if ! "$pytest_python" -m pytest tests/python -q; then
    failed+=("pytest")
fi

step "node --test tests/node (the official openai Node SDK)"
if ! (cd tests/node && npm ci --no-audit --no-fund --loglevel=error && npm test); then
    failed+=("node tests")
fi

if [ ${#failed[@]} -gt 0 ]; then
    printf '\nFAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
