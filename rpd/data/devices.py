"""Torch devices and ManiSkill simulator backends: the `--device` and `--sim-backend` choices,
and the CPU threading rule of processes that own a CPU simulator."""

from __future__ import annotations

from rpd.errors import InputError

SIM_BACKENDS = {"auto": "auto", "cpu": "physx_cpu", "gpu": "physx_cuda"}
"""`--sim-backend` choices -> ManiSkill sim backends ("auto": the GPU when CUDA is present)."""


def check_sim_backend(choice: str) -> str:
    """A `--sim-backend` choice (or a ManiSkill backend name) -> ManiSkill's backend name.

    Raises:
        InputError: an unknown choice, or the GPU backend without a CUDA device.
    """
    backend = SIM_BACKENDS.get(choice, choice)
    if backend not in ("auto", "physx_cpu", "physx_cuda"):
        raise InputError(f"--sim-backend {choice!r}: use auto, cpu or gpu")
    if backend == "physx_cuda" and not cuda_available():
        raise InputError("--sim-backend gpu: torch sees no CUDA device here; use --sim-backend "
                         "cpu (or auto, which takes the GPU where there is one)")
    return backend


def resolve_device(choice: str, option: str = "--device") -> str:
    """A `--device` choice -> a torch device string: "auto" (CUDA when present), "cpu", "cuda"
    or "cuda:N".

    Raises:
        InputError: an unknown choice, or CUDA asked for where torch sees none.
    """
    if choice not in ("auto", "cpu", "cuda") and not choice.startswith("cuda:"):
        raise InputError(f"{option} {choice!r}: use auto, cpu or cuda")
    if choice == "auto":
        return "cuda" if cuda_available() else "cpu"
    if choice.startswith("cuda") and not cuda_available():
        raise InputError(f"{option} {choice}: torch sees no CUDA device here; use {option} cpu "
                         "(or auto, which takes the GPU where there is one)")
    return choice


def cuda_available() -> bool:
    """True when torch sees a CUDA device (then ManiSkill's GPU simulation is used)."""
    import torch

    return torch.cuda.is_available()


def limit_cpu_threads() -> None:
    """Call in every process that owns a ManiSkill CPU env.

    Measured on a 2-core machine: without it small torch ops were ~100x slower (SB3 PPO took
    28.7 s instead of 3.9 s per 1024 steps) because torch's thread pool fights the simulator.
    """
    import torch

    torch.set_num_threads(1)
