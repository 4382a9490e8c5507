#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it:
# curl (the end-to-end tests drive ingressd with it), nghttp and h2load
# (Debian's nghttp2-client: the HTTP/2 tests), haproxy and openssl (the PROXY
# protocol and TLS passthrough tests), nginx and wrk (the load-test tools' tests), jq
# (the migration guide's commands), gcc
# and Python's headers (the compiled build), a virtualenv in .venv with
# ingressd (compiled) and its test extras, then ruff and pytest: all tests on
# the compiled build, the unit tests on pure Python too. Extra arguments go to
# both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."

MISSING=""
command -v curl >/dev/null 2>&1 || MISSING="$MISSING curl"
{ command -v nghttp && command -v h2load; } >/dev/null 2>&1 || MISSING="$MISSING nghttp2-client"
# haproxy: the PROXY protocol tests put it in front (send-proxy, send-proxy-v2);
# openssl: the passthrough tests read certificates with s_client.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || MISSING="$MISSING haproxy"
command -v openssl >/dev/null 2>&1 || MISSING="$MISSING openssl"
# nginx and wrk: the load-test tools' tests start a real nginx and parse wrk's output
# (they skipped where these were missing, so a fresh machine tested less).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || MISSING="$MISSING nginx-light"
command -v wrk >/dev/null 2>&1 || MISSING="$MISSING wrk"
# jq: the migration guide's commands are run as written (tests/shell/test_migration_guide.py).
command -v jq >/dev/null 2>&1 || MISSING="$MISSING jq"
# A C compiler and Python's headers: the compiled build (mypyc) is required below.
command -v cc >/dev/null 2>&1 || MISSING="$MISSING gcc"
PYTHON="${PYTHON:-python3}"
"$PYTHON" - <<'PY' || MISSING="$MISSING python3-dev"
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
"$PYTHON" -c "import ensurepip" >/dev/null 2>&1 || MISSING="$MISSING python3-venv"
if [ -n "$MISSING" ]; then
  echo "installing$MISSING (apt-get)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $MISSING >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The compiled build (mypyc, setup.py) is required here: a compile that fails
# must fail the tests, not fall back to pure Python unseen.
INGRESSD_REQUIRE_COMPILED=1 .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Everything on the compiled build, then the unit tests again on pure Python
# (the fallback where no C compiler is found): both must behave the same.
# Two worker processes (pytest-xdist), whatever the machine: in the first run one
# takes the end-to-end tests, one after another as in a single process
# (tests/conftest.py puts them in one group), while the other builds the wheel
# (mypyc: minutes) and runs the unit tests. `-n 0` among the arguments: one process.
XDIST=(-n 2 --dist loadscope)
INGRESSD_EXPECT_BUILD=compiled .venv/bin/python -m pytest -q -p no:cacheprovider "${XDIST[@]}" "$@"
echo "== the unit tests again, on pure Python (INGRESSD_PURE_PYTHON=1)"
INGRESSD_PURE_PYTHON=1 INGRESSD_EXPECT_BUILD=pure \
  exec .venv/bin/python -m pytest -q -p no:cacheprovider "${XDIST[@]}" --ignore=tests/e2e "$@"
