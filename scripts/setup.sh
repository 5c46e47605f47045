#!/usr/bin/env bash
# Set up a fresh Debian 12/13 machine (as root) for rpd: system packages for SAPIEN's
# Vulkan renderer, a virtual environment at .venv, rpd with its test extras.
# Idempotent: running it again changes nothing that is already in place.
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
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  . /etc/os-release
  codename="${VERSION_CODENAME:-}"
  need=(libvulkan1 vulkan-tools libegl1 libgl1 libglib2.0-0 python3-venv)
  if command -v nvidia-smi >/dev/null 2>&1; then
    log "NVIDIA driver found: using it for Vulkan"
    mesa_release=""
  elif [ "$codename" = "bookworm" ]; then
    mesa_release="bookworm-backports"
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding the bookworm-backports apt source (for Mesa 25's Vulkan driver)"
      echo "deb http://deb.debian.org/debian bookworm-backports main" \
        > /etc/apt/sources.list.d/rpd-bookworm-backports.list
      rm -f /var/lib/apt/lists/lock
      apt-get update -q >/dev/null
    fi
  else
    mesa_release=""
  fi
  stamp=/var/lib/rpd-setup.stamp
  if [ ! -f "$stamp" ] || ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
    [ -d /var/lib/apt/lists/partial ] && [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial -e auxfiles)" ] \
      || apt-get update -q >/dev/null
    log "installing system packages: ${need[*]} mesa-vulkan-drivers"
    apt_install "${need[@]}" || { apt-get update -q >/dev/null; apt_install "${need[@]}"; }
    if [ -n "$mesa_release" ]; then
      apt_install -t "$mesa_release" mesa-vulkan-drivers
    elif ! command -v nvidia-smi >/dev/null 2>&1; then
      apt_install mesa-vulkan-drivers
    fi
    touch "$stamp"
  else
    log "system packages already installed"
  fi
else
  log "not root or no apt-get: skipping system packages (install a Vulkan driver yourself)"
fi

# --- Python environment ----------------------------------------------------------------
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first: on a machine with its CPU wheel on disk, pip takes it without a download.
# A user who already has a CUDA build keeps it (rpd's own torch range is wide).
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  log "installing torch"
  .venv/bin/python -m pip install -q "torch==2.13.0" \
    || .venv/bin/python -m pip install -q "torch>=2.3"
fi
log "installing rpd and its test extras"
.venv/bin/python -m pip install -q -e ".[test]"
log "done: activate with 'source .venv/bin/activate', then run 'rpd --help'"
