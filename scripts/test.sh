#!/usr/bin/env bash
# One command on a fresh machine: install into .venv/, create the open_clip test environment .venv-clip/
# (torch 2.14.1 + torchvision 0.29.1 + open_clip_torch; see DESIGN.md), and run the whole test suite in both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install_services.sh  # orthanc + orthanc-dicomweb + chromium (apt) for the clinical-interface tests
.venv/bin/python -m pytest -q "$@"
if [ -f .ci/clip-env.sh ]; then
  bash .ci/clip-env.sh
  .venv-clip/bin/python -m pytest -q -m openclip tests/test_encoders_openclip.py
fi
