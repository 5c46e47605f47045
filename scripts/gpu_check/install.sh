#!/usr/bin/env bash
# Install one part of the GPU check's wheels (made by prepare.py) into .gpu/site, offline.
# Usage (repository root, on the GPU machine): bash scripts/gpu_check/install.sh .gpu/wheels-1
set -euo pipefail
part=${1:?usage: install.sh .gpu/wheels-N}
[ -d "$part" ] || { echo "install.sh: $part: no such directory; run prepare.py first" >&2; exit 2; }
python -m pip install --quiet --no-deps --no-index --disable-pip-version-check \
    --target .gpu/site "$part"/*.whl
echo "installed $(ls "$part"/*.whl | wc -l) wheels from $part into .gpu/site"
