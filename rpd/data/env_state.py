"""Simulator state: capture every sub-env's state as a flat vector, restore it, and report it
in a CPU env's infos."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def get_env_state(env: Any) -> np.ndarray:
    """The simulator state of every sub-env as a flat vector: [B, S] float32.

    Enough to restore the scene exactly (`set_env_state`) and re-render any camera.
    """
    state = env.unwrapped.get_state()
    return state.cpu().numpy().astype(np.float32) if hasattr(state, "cpu") else np.asarray(state)


def set_env_state(env: Any, state: np.ndarray) -> None:
    """Restore states from `get_env_state`: [B, S] (or [S] for a single env)."""
    import torch

    state = np.asarray(state, dtype=np.float32)
    if state.ndim == 1:
        state = state[None]
    env.unwrapped.set_state(torch.as_tensor(state, device=env.unwrapped.device))


class EnvStateInfo(gym.Wrapper):
    """Adds info["env_state"] ([S] float32, the state of the returned observation) to every
    reset and step of a single CPU env (under CPUGymWrapper)."""

    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        info["env_state"] = get_env_state(self.env)[0]
        return obs, info

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["env_state"] = get_env_state(self.env)[0]
        return obs, reward, terminated, truncated, info
