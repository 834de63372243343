#!/usr/bin/env bash
# System services the clinical-interface tests start themselves (tests/test_dicomweb.py, tests/test_viewer.py):
#   orthanc + orthanc-dicomweb  a real PACS with DICOMweb (QIDO-RS / WADO-RS / STOW-RS) on 127.0.0.1
#   chromium                    a headless browser for the evidence viewer (driven by playwright's Python API)
# Debian / Ubuntu with apt; needs root (or sudo). Idempotent: does nothing when all are present.
# The Orthanc service that the package enables is not needed: the tests start their own instance on a free port.
set -euo pipefail
need=()
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || ls /usr/share/orthanc/plugins/*DicomWeb* >/dev/null 2>&1 \
  || need+=(orthanc-dicomweb)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  echo "services: orthanc, orthanc-dicomweb and chromium are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "services: no apt-get here; install ${need[*]} by hand (the tests that need them skip and say so)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "services: not root and no sudo; install ${need[*]} by hand (the tests that need them skip)" >&2
    exit 0
  fi
fi
echo "services: installing ${need[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the package's own Orthanc service from starting (the tests start theirs on a free port).
if [ ! -e /usr/sbin/policy-rc.d ] && [ -z "$SUDO" ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "services: installed ${need[*]}"
