#!/usr/bin/env bash
# Installs lookalike and everything it needs into ./.venv (idempotent).
# Usage: scripts/install.sh            # the engine, deep model, server
#        scripts/install.sh --test     # plus test tools and Debian's chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# torch is pinned in the same install so pip takes the local CPU build, not a multi-GB CUDA one.
extras="heic,deep,server"
if [ "${1:-}" = "--test" ]; then
    extras="$extras,test,scaleout"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[${extras}]"
# Debian's packages for the tests: chromium (browser tests), Fashion-MNIST (quality tests).
if [ "${1:-}" = "--test" ] && { ! command -v chromium >/dev/null 2>&1 \
        || [ ! -d /usr/share/datasets/fashion-mnist ]; }; then
    if [ "$(id -u)" = "0" ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium dataset-fashion-mnist >/dev/null) \
            || echo "note: chromium or dataset-fashion-mnist could not be installed; their tests will fail" >&2
    else
        echo "note: run 'apt-get install chromium dataset-fashion-mnist' for the browser and quality tests" >&2
    fi
fi
# The scale-out tests start a real Milvus standalone server (PyPI's `milvus` wheel) as a
# subprocess. It needs old pins that the project must not take, so it lives in its own
# virtual environment, ./.venv-milvus; the tests find it there (tests/milvus_server.py).
if [ "${1:-}" = "--test" ]; then
    if [ ! -x .venv-milvus/bin/milvus-server ]; then
        "$PY" -m venv .venv-milvus
        .venv-milvus/bin/python -m pip install -q --disable-pip-version-check \
            "milvus==2.3.5" "setuptools<81" "protobuf<5" "marshmallow<4"
    fi
fi
# Byte-compile lookalike's source now: where PYTHONDONTWRITEBYTECODE is set, every command and
# ingest worker would otherwise compile it again at start (~0.3 s each).
.venv/bin/python -m compileall -q src/lookalike >/dev/null
