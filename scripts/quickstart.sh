#!/usr/bin/env bash
# One command on a fresh machine: install into .venv/, build the demo index from DICOM files that pydicom and
# pydicom-data ship, and ask one question about a chest radiograph. Prints the cited answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ragmed demo --out indexes/demo
