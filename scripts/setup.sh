#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for rpd: system packages for SAPIEN's
# Vulkan renderer, a virtual environment at .venv, rpd with its test extras.
# Idempotent: running it again changes nothing that is already in place. Debian 13 works with
# a Python 3.10-3.12 of your own (PYTHON=python3.12): its python3 is 3.13 (see below).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# --- system packages -------------------------------------------------------------------
# SAPIEN (ManiSkill's simulator) needs a Vulkan device even for state-only simulation.
# With an NVIDIA driver present we use it; otherwise Mesa's software renderer (lavapipe).
# Debian 12's Mesa 22 lavapipe lacks a feature SAPIEN needs; Mesa 25 from bookworm-backports
# works. Debian 13's own Mesa works.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  . /etc/os-release
  pkgs=(libvulkan1 libegl1 libgl1 libglib2.0-0 python3-venv)
  mesa_args=(mesa-vulkan-drivers)
  if command -v nvidia-smi >/dev/null 2>&1; then
    log "NVIDIA driver found: SAPIEN will use it for Vulkan"
    mesa_args=()
  elif [ "${VERSION_CODENAME:-}" = "bookworm" ]; then
    mesa_args=(-t bookworm-backports mesa-vulkan-drivers)
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding the bookworm-backports apt source (Mesa 25's Vulkan driver)"
      echo "deb http://deb.debian.org/debian bookworm-backports main" \
        > /etc/apt/sources.list.d/rpd-bookworm-backports.list
      apt-get update -q >/dev/null
    fi
  fi
  missing=()
  for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
  mesa_ok=1
  if [ ${#mesa_args[@]} -gt 0 ]; then
    installed mesa-vulkan-drivers || mesa_ok=0
    # Debian 12's own Mesa 22 is refused by SAPIEN: require the backports build there.
    if [ "${VERSION_CODENAME:-}" = "bookworm" ] && \
       dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^22\.'; then
      mesa_ok=0
    fi
  fi
  if [ ${#missing[@]} -gt 0 ] || [ "$mesa_ok" = 0 ]; then
    log "installing system packages: ${missing[*]} ${mesa_args[*]}"
    apt-get update -q >/dev/null
    [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
    [ "$mesa_ok" = 1 ] || apt_install "${mesa_args[@]}"
  else
    log "system packages already installed"
  fi
else
  log "not root or no apt-get: skipping system packages (install a Vulkan driver yourself)"
fi

# --- Python environment ----------------------------------------------------------------
# Python 3.10-3.12: ManiSkill's motion planner (mplib) pins numpy < 2, which has no wheels for
# Python 3.13+ (Debian 13's python3). PYTHON=... picks the interpreter; otherwise the newest
# supported python3.x on the PATH.
supported() {
  "$1" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' \
    >/dev/null 2>&1
}
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
else
  PY=python3
  for c in python3.12 python3.11 python3.10; do
    if command -v "$c" >/dev/null 2>&1 && supported "$c"; then PY="$c"; break; fi
  done
fi
if [ ! -x .venv/bin/python ] && ! supported "$PY"; then
  echo "[setup] error: $("$PY" --version 2>&1 || echo "$PY: not found") is not supported: rpd" \
       "needs Python 3.10-3.12 (ManiSkill's motion planner mplib pins numpy < 2, which has no" \
       "wheels for 3.13+; Debian 13 ships 3.13). Install Python 3.12 (e.g. with pyenv) and run:" \
       "PYTHON=python3.12 bash scripts/setup.sh" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1
# torch first: on a machine with its CPU wheel on disk, pip takes it without a download.
# A user who already has a CUDA build keeps it (rpd's own torch range is wide).
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  log "installing torch"
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>/dev/null \
    || .venv/bin/python -m pip install -q "torch>=2.3"
fi
log "installing rpd and its test extras"
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v -e "is ignored: it is neither" -e "^$" || true
.venv/bin/python -c "import rpd, mani_skill, stable_baselines3, zarr" # fail loudly if the install failed
log "done: activate with 'source .venv/bin/activate', then run 'rpd --help'"
