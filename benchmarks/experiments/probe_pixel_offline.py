"""Measured whether a pixel student's offline fit generalises and survives the first PPO update.

Fits a camera-only student (64 px render camera, PushCube-v1) to N states of a `rpd cache`
store, then reports the action error (squared, summed over dims) on those states and on the
states of a second store (other rollout seeds), before the fit, after it, and after one plain
PPO update (2 envs x 64 steps, sparse reward, no labels). Prints one JSON line.

    python benchmarks/experiments/probe_pixel_offline.py STORE HELD_OUT_STORE
        --states 1500 --shift 4
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch as th


def _frames(cfg: Any, rows: Any, idx: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from rpd.data.vec_envs import render_states

    rgb, proprio = render_states(cfg, rows.env_state[idx], workers=2)
    return {"rgb": rgb, "proprio": proprio, "state": rows.obs[idx]}, rows.teacher_action[idx]


def _error(model: Any, obs: dict[str, np.ndarray], action: np.ndarray) -> float:
    channel_first = {k: np.moveaxis(v, -1, 1) if k == "rgb" else v for k, v in obs.items()}
    with th.no_grad():
        tensors = model.policy.obs_to_tensor(channel_first)[0]
        mean = model.policy.get_distribution(tensors).distribution.mean.numpy()
    return round(float(((mean - action) ** 2).sum(1).mean()), 4)


def main() -> None:
    from stable_baselines3.common.vec_env import VecMonitor

    from rpd.data.devices import limit_cpu_threads
    from rpd.data.store import TeacherStore
    from rpd.data.vec_envs import EnvConfig, make_vec_env
    from rpd.data.views import CameraSpec
    from rpd.student.policies import PixelActorCriticPolicy
    from rpd.student.rpdppo import RPDPPO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("held_out_store")
    parser.add_argument("--states", type=int, default=1500, help="fitted states")
    parser.add_argument("--held-out", type=int, default=400, help="held-out states")
    parser.add_argument("--steps", type=int, default=1000, help="supervised steps")
    parser.add_argument("--shift", type=int, default=0, help="random shift in px (0: none)")
    parser.add_argument("--separate-critic", action="store_true",
                        help="the critic gets its own CNN (it reads rgb + proprio)")
    args = parser.parse_args()
    limit_cpu_threads()
    cfg = EnvConfig("PushCube-v1", obs_mode="rgb", camera=CameraSpec("render", 64, 64),
                    reward_mode="sparse")
    wanted = ["obs", "env_state", "teacher_action"]
    fit_rows = TeacherStore.open(args.store).read(wanted)
    held_rows = TeacherStore.open(args.held_out_store).read(wanted)
    idx = np.random.default_rng(0).permutation(len(fit_rows.obs))[:args.states]
    fit = _frames(cfg, fit_rows, idx)
    held = _frames(cfg, held_rows, np.arange(min(args.held_out, len(held_rows.obs))))
    venv = VecMonitor(make_vec_env(cfg, 2, seed=0))
    critic = ("rgb", "proprio") if args.separate_critic else None
    model = RPDPPO(PixelActorCriticPolicy, venv, n_steps=64, batch_size=64, seed=0,
                   device="cpu", policy_kwargs=dict(log_std_init=-1.5, actor_keys=("rgb",),
                                                    critic_keys=critic))
    result: dict[str, Any] = dict(vars(args), label_variance=round(float(
        held[1].var(0).sum()), 4))
    result["before"] = [_error(model, *fit), _error(model, *held)]
    model.fit_offline(fit[0], fit[1], args.steps, batch_size=256, shift=args.shift)
    result["after_fit"] = [_error(model, *fit), _error(model, *held)]
    model.learn(128)  # one rollout and one update of plain PPO (no labels)
    result["after_ppo_update"] = [_error(model, *fit), _error(model, *held)]
    venv.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
