"""Prepare the GPU check's wheels on a machine with package-registry access (issue 16).

The GPU machine has Python 3.12, torch and numpy 2 and no network, and takes at most 64 MiB
per transfer. This downloads, for CPython 3.12 on manylinux x86_64, the wheels of every
package the check imports that such a machine lacks, at the versions of this environment
(the ones rpd is tested with); trims ManiSkill's wheel to the assets the supported Panda
tasks use (its other robots, environment maps and a 17 MB sky map are 70 % of it); and
packs the wheels into parts of at most --part-mib each (imageio-ffmpeg, 65 MiB, is left
out: the check writes no video):

    .venv/bin/python scripts/gpu_check/prepare.py [--out .gpu] [--part-mib 60]

writes OUT/wheels-1, OUT/wheels-2, ... (see scripts/gpu_check/README.md for the run).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

NEEDED = [
    # simulation
    "mani_skill", "sapien", "gymnasium", "Farama-Notifications", "cloudpickle", "dacite",
    "h5py", "PyYAML", "tqdm", "GitPython", "gitdb", "smmap", "tabulate", "transforms3d",
    "trimesh", "ImageIO", "pillow", "scipy", "tyro", "docstring_parser",
    "typeguard", "rich", "markdown-it-py", "mdurl", "Pygments", "shellingham",
    "huggingface_hub", "filelock", "fsspec", "packaging", "requests", "urllib3", "idna",
    "certifi", "charset-normalizer", "hf-xet", "lxml", "pytorch-kinematics",
    "arm_pytorch_utilities", "pytorch-seed", "psutil", "typing_extensions",
    "ipython", "decorator",
    # rpd
    "stable_baselines3", "click", "safetensors", "zarr", "numcodecs", "donfig",
    "google-crc32c", "tensorboard", "tensorboard-data-server", "protobuf", "absl-py",
    "grpcio", "Markdown", "Werkzeug", "MarkupSafe", "pandas", "python-dateutil", "six",
    "pytz", "tzdata", "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver",
    "pyparsing", "msgpack", "openpi-client", "websockets", "dm-tree", "attrs", "wrapt",
]
SKIP_PREFIXES = ("mani_skill/assets/environment_maps/", "mani_skill/assets/maniskill2-scene",
                 "mani_skill/utils/scene_builder/replicacad/autumn_field_puresky_4k.hdr",
                 "mani_skill/assets/robots/panda/sciurus17_description/")
KEEP_ROBOTS = ("panda",)


EXTRA = ["opencv-python-headless==4.11.0.86"]
"""ManiSkill imports cv2; the headless build is the same module in 50 MiB instead of 60."""


def installed(names: list[str]) -> list[str]:
    """name==version for each of `names` installed here (those missing are left out)."""
    pins = list(EXTRA)
    for name in names:
        try:
            pins.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return pins


def download(pins: list[str], dest: Path) -> None:
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux_2_5_x86_64", "manylinux1_x86_64", "any"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
           "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    for pin in pins:  # one by one: a package without a 3.12 wheel at this version is named
        r = subprocess.run([*cmd, pin], capture_output=True, text=True)
        if r.returncode:
            name = pin.split("==")[0]
            r = subprocess.run([*cmd, name], capture_output=True, text=True)  # newest instead
            print(f"{pin}: no 3.12 wheel at this version; "
                  f"{'took the newest' if r.returncode == 0 else 'FAILED'}")


def keep(name: str) -> bool:
    if name.startswith(SKIP_PREFIXES):
        return False
    m = re.match(r"mani_skill/assets/robots/([^/]+)/", name)
    return m is None or m.group(1) in KEEP_ROBOTS


def trim_mani_skill(wheel: Path) -> None:
    """Rewrite ManiSkill's wheel without the assets the supported tasks do not use (its
    RECORD is rewritten to match, so pip installs it)."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.endswith(".dist-info/RECORD"):
                lines = src.read(info).decode().splitlines()
                dst.writestr(info, "\n".join(line for line in lines
                                             if keep(line.split(",")[0])) + "\n")
            elif keep(info.filename):
                dst.writestr(info, src.read(info))
    before, after = wheel.stat().st_size, tmp.stat().st_size
    tmp.replace(wheel)
    print(f"trimmed {wheel.name}: {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")


def pack(wheels: list[Path], out: Path, part_mib: float) -> list[Path]:
    """First-fit-decreasing into parts of at most part_mib."""
    parts: list[list[Path]] = []
    sizes: list[int] = []
    limit = part_mib * 2**20
    for w in sorted(wheels, key=lambda w: -w.stat().st_size):
        size = w.stat().st_size
        if size > limit:
            raise SystemExit(f"{w.name} is {size / 2**20:.1f} MiB, over --part-mib {part_mib}")
        for i, used in enumerate(sizes):
            if used + size <= limit:
                parts[i].append(w)
                sizes[i] += size
                break
        else:
            parts.append([w])
            sizes.append(size)
    dirs = []
    for i, part in enumerate(parts, 1):
        d = out / f"wheels-{i}"
        d.mkdir(parents=True)
        for w in part:
            shutil.move(str(w), d / w.name)
        dirs.append(d)
        print(f"{d}: {len(part)} wheels, {sizes[i - 1] / 2**20:.1f} MiB")
    return dirs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p.add_argument("--part-mib", type=float, default=60.0)
    a = p.parse_args()
    for old in a.out.glob("wheels-*"):
        shutil.rmtree(old)
    staging = a.out / "download"
    staging.mkdir(parents=True, exist_ok=True)
    download(installed(NEEDED), staging)
    for wheel in staging.glob("mani_skill-*.whl"):
        trim_mani_skill(wheel)
    pack(sorted(staging.glob("*.whl")), a.out, a.part_mib)
    shutil.rmtree(staging)


if __name__ == "__main__":
    main()
