#!/usr/bin/env bash
# Create (idempotently) the open_clip test environment, .venv-clip at the repository root.
# open_clip needs torchvision, and PyPI's torchvision does not import beside torch 2.13 (the main venv), so the
# open_clip loaders (biomedclip, unimed-clip) are tested in this second venv on the torch 2.14.1 / torchvision 0.29.1
# pairing. Usage:  bash .ci/clip-env.sh && .venv-clip/bin/python -m pytest -m openclip tests/test_encoders_openclip.py
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-clip
PY=${PYTHON:-python3}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import open_clip, torchvision, ragmed, pytest" 2>/dev/null; then
  echo "$VENV ready"
  exit 0
fi
source scripts/pipq.sh
echo "creating $VENV (torch 2.14.1 + torchvision 0.29.1 + open_clip_torch)"
"$PY" -m venv "$VENV"
pipq "$VENV/bin/pip" install -q --upgrade pip
# torch first, pinned with torchvision; open_clip_torch then resolves against them (no torch replacement).
pipq "$VENV/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1" open_clip_torch
# ragmed's own runtime dependencies (from pyproject.toml) plus pytest, then ragmed itself without deps.
DEPS=$("$VENV/bin/python" - <<'PYEOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if not d.lower().startswith("torch")))
PYEOF
)
# shellcheck disable=SC2086
pipq "$VENV/bin/pip" install -q $DEPS pytest
pipq "$VENV/bin/pip" install -q -e . --no-deps
"$VENV/bin/python" -c "import open_clip, torchvision, torch, ragmed; print('$VENV ready: torch', torch.__version__, 'open_clip', open_clip.__version__)"
