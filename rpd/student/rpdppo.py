"""RPDPPO: Stable-Baselines3 PPO plus a distillation term toward teacher actions.

Refined Policy Distillation (Jülg et al., arXiv 2503.05833): loss = L_PPO + λ · distill(μ, a_T).
Extends SB3 2.9 the way sb3-contrib's RecurrentPPO does: its own rollout buffer
(`RPDRolloutBuffer`), and overrides of `collect_rollouts` and `train` copied from SB3 with the
RPD additions between `# --- RPD` markers. Unlike the paper's code, which queries the teacher
inside every minibatch of every epoch, each transition is labelled once, after its rollout:
cache lookup first, one batched live-teacher call for the misses, labels written back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from rpd.labels.protocol import (
    ANSWER_KINDS,
    EXACT,
    NEIGHBOUR,
    NONE,
    FrameLabeller,
    LabelSource,
)
from rpd.labels.replay import LabelReplay
from rpd.student.buffer import RPDDictRolloutBuffer, RPDRolloutBuffer
from rpd.student.losses import (
    DISTILL_KINDS,
    LambdaSchedule,
    bc_distill,
    l1_distill,
    mse_distill,
    per_dim_squared_error,
    sign_agreement,
)

logger = logging.getLogger(__name__)


def channel_first(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A pixel student's observations by key, "rgb" [N, H, W, 3] as rendered turned to
    [N, 3, H, W]: SB3's VecTransposeImage stores frames channel-first, as the policy's space
    says."""
    return {k: np.ascontiguousarray(np.moveaxis(v, -1, 1)) if k == "rgb" else np.asarray(v)
            for k, v in obs.items()}


def random_shift(images: th.Tensor, pad: int, generator: th.Generator) -> th.Tensor:
    """Shift each image [B, C, H, W] by a random offset in [-pad, pad] per axis, replicating
    the edges (the augmentation of DrQ, Kostrikov et al. 2020). Keeps the dtype."""
    b, _, h, w = images.shape
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    dy, dx = th.randint(0, 2 * pad + 1, (2, b), generator=generator).tolist()
    out = th.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx,
                                                                                   strict=True))])
    return out.to(images.dtype)


class UpdateEndCallback(BaseCallback):
    """A callback that `RPDPPO` also calls after each update (`on_update_end`), where the
    model is a consistent whole: weights, optimiser, `num_timesteps` and buffers all describe
    the same point. SB3's `on_rollout_end` comes before the rollout's update."""

    def on_update_end(self) -> None:
        self._on_update_end()

    def _on_update_end(self) -> None:
        pass


def _update_end(callback: BaseCallback | None) -> None:
    if isinstance(callback, CallbackList):
        for c in callback.callbacks:
            _update_end(c)
    elif isinstance(callback, UpdateEndCallback):
        callback.on_update_end()


def env_states_after_reset(env: VecEnv) -> np.ndarray:
    """Simulator states [E, S] of the observations the last `env.reset()` returned."""
    inner = env.unwrapped
    if inner.reset_infos and "env_state" in inner.reset_infos[0]:
        return np.stack([info["env_state"] for info in inner.reset_infos])
    return _gpu_env_states(inner)


def env_states_after_step(env: VecEnv, infos: list[dict[str, Any]],
                          dones: np.ndarray) -> np.ndarray:
    """Simulator states [E, S] of the observations the last `env.step()` returned.

    For an env that auto-reset, the new observation's state is in its reset info (the step
    info holds the terminal state).
    """
    if infos and "env_state" in infos[0]:
        inner = env.unwrapped
        return np.stack([inner.reset_infos[i]["env_state"] if done else info["env_state"]
                         for i, (info, done) in enumerate(zip(infos, dones, strict=True))])
    return _gpu_env_states(env.unwrapped)


def _gpu_env_states(inner: Any) -> np.ndarray:
    """ManiSkill's GPU vec env (ManiSkillSB3VectorEnv): the batched env's state is current."""
    base = getattr(inner, "base_env", None)
    if base is None or not hasattr(base, "get_state"):
        raise RuntimeError("the training env reports no env_state; build it with "
                           "make_vec_env(..., with_env_state=True)")
    state = base.get_state()
    return state.cpu().numpy().astype(np.float32)


class RPDPPO(PPO):
    """PPO whose loss adds λ · distill(student, teacher) on labelled transitions.

    Args (in addition to PPO's):
        label_source: Cache + live teacher (`LabelSource`); None = plain PPO (no distillation).
        distill: "mse" on the Gaussian mean (paper), "l1" on the mean, or "bc" (-log π(a_T|s)).
        lambda_schedule: λ over env steps; once λ is 0 the teacher is not consulted.
        live_budget: Max live teacher calls per rollout (None = unlimited); the transitions
            left unlabelled are masked out of the distill term.
        frame_labeller: For a pixel student that sees exactly the teacher's view: labels the
            live misses from the frames the student already rendered (no restore, no render).
        label_renders: Whether a `label_source.label_live` call renders the teacher's camera
            once per state (counted in `teacher_renders`).
        answer_audit: Per rollout, ask the live teacher about this many states the label
            source answered, to measure the answers' error (`distill/answer_error_<kind>`).
        label_replay: Keep this many labelled transitions of earlier rollouts (`LabelReplay`)
            and average the distill term of each minibatch with that of as many replayed
            ones; 0 = the current rollout only (the paper's). Not in the model's .zip: `rpd
            train` saves it beside the checkpoint (`LabelReplay.save`) while λ > 0.

    Logged: train/distill_loss, distill/lambda, distill/cache_hit_rate (exact + neighbour),
    distill/answer_exact|neighbour|model (share of the rollout's states),
    distill/live_teacher_calls and distill/teacher_renders (cumulative; renders made only for
    labels), distill/labelled_fraction, distill/answer_error_<kind> (with `answer_audit`),
    and how the rollout's policy mean compared with its labels: distill/mse_dim_0.. (squared
    error per action dim) and distill/gripper_agreement (same sign of the last dim);
    distill/replay_size with a label replay.
    """

    rollout_buffer: RPDRolloutBuffer

    def __init__(self, policy: Any, env: Any, *, label_source: LabelSource | None = None,
                 distill: str = "mse", lambda_schedule: LambdaSchedule | None = None,
                 live_budget: int | None = None, frame_labeller: FrameLabeller | None = None,
                 label_renders: bool = False, answer_audit: int = 0, label_replay: int = 0,
                 **kwargs: Any) -> None:
        if distill not in DISTILL_KINDS:
            raise ValueError(f"distill {distill!r}: use one of {', '.join(DISTILL_KINDS)}")
        space = getattr(env, "observation_space", None)
        kwargs.setdefault("rollout_buffer_class", RPDDictRolloutBuffer
                          if isinstance(space, spaces.Dict) else RPDRolloutBuffer)
        # --- RPD state (saved with the model except the label source) ---
        self.label_source = label_source
        self.distill = distill
        self.lambda_schedule = lambda_schedule or LambdaSchedule()
        self.live_budget = live_budget
        self.frame_labeller = frame_labeller
        self.label_renders = label_renders
        self.live_teacher_calls = 0
        self.teacher_renders = 0
        self.cache_lookups = 0
        self.cache_hits = 0
        self.answers: dict[str, int] = {}
        """States answered without the live teacher, by `ANSWER_KINDS` name."""
        self.answer_audit = int(answer_audit)
        self.audit_calls = 0
        self.answer_error: dict[str, tuple[float, int]] = {}
        """Audited answers by kind: (sum of squared errors against the live teacher, count)."""
        self.update_seconds = 0.0
        """Wall time in `train()` (the gradient updates) since this object was made or loaded."""
        self._last_env_states: np.ndarray | None = None
        self.label_replay = int(label_replay)
        self.replay: LabelReplay | None = None
        """Made on first use (`label_replay_buffer`), with capacity `label_replay`."""
        self._learn_callback: BaseCallback | None = None
        super().__init__(policy, env, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "label_source", "frame_labeller",
                "_last_env_states", "update_seconds", "replay", "_learn_callback"]

    # ---- rollout --------------------------------------------------------------------------

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        reset = kwargs.get("reset_num_timesteps", args[2] if len(args) > 2 else True)
        if reset or self._last_obs is None:
            self._last_env_states = None  # the env is about to be reset
        total, callback = super()._setup_learn(*args, **kwargs)
        self._learn_callback = callback  # for `on_update_end`, which SB3 does not call
        return total, callback

    def restart_episodes(self, step: int) -> None:
        """Reset every env, each restarting its episode-seed stream at `step`
        (`rpd.data.seeding.EPISODE_SEED_STEP`). An episode in progress cannot be saved, so a run
        resumed at a checkpoint starts fresh ones (its envs built with start_step = the
        checkpoint's step); a run that restarts its episodes at each checkpoint goes on exactly
        as a run resumed there."""
        from rpd.data.seeding import EPISODE_SEED_STEP

        assert self.env is not None
        self.env.set_options({EPISODE_SEED_STEP: int(step)})
        self._last_obs = self.env.reset()  # type: ignore[assignment]
        self._last_episode_starts = np.ones((self.env.num_envs,), dtype=bool)
        self._last_env_states = None

    def _labels_wanted(self, steps_after_rollout: int) -> bool:
        """Whether the update after this rollout uses labels (λ at that step > 0)."""
        return self.label_source is not None and self.lambda_schedule(steps_after_rollout) > 0

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback,
                         rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> bool:
        """SB3's OnPolicyAlgorithm.collect_rollouts, plus env-state recording and labelling."""
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        # --- RPD: track the env state of the current observations whenever there is a
        # teacher; label this rollout only if the update after it uses labels (λ > 0) ---
        track = self.label_source is not None and isinstance(
            rollout_buffer, (RPDRolloutBuffer, RPDDictRolloutBuffer))
        record_states = track and self._labels_wanted(
            self.num_timesteps + n_rollout_steps * env.num_envs)
        if track and self._last_env_states is None:
            self._last_env_states = env_states_after_reset(env)
        # --- end RPD ---

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, values, log_probs = self.policy(obs_tensor)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low,
                                              self.action_space.high)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            for idx, done in enumerate(dones):
                if (done and infos[idx].get("terminal_observation") is not None
                        and infos[idx].get("TimeLimit.truncated", False)):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                    rewards[idx] += self.gamma * terminal_value
            # --- RPD: the state of the observation stored below, then of the new one ---
            if record_states:
                rollout_buffer.add_env_states(self._last_env_states)  # type: ignore[attr-defined]
            # --- end RPD ---
            rollout_buffer.add(self._last_obs, actions, rewards,  # type: ignore[arg-type]
                               self._last_episode_starts, values, log_probs)  # type: ignore[arg-type]
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            # --- RPD ---
            if track:
                self._last_env_states = env_states_after_step(env, infos, dones)
            # --- end RPD ---

        with th.no_grad():
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        # --- RPD: label the whole rollout once (cache first, then one live batch) ---
        if record_states:
            self._label_rollout(rollout_buffer)  # type: ignore[arg-type]
        # --- end RPD ---
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _label_rollout(self, buffer: RPDRolloutBuffer | RPDDictRolloutBuffer) -> None:
        """Fill buffer.teacher_action / label_mask: cache lookup, live batch for misses,
        write-back. Logs the distill/ rollout metrics.

        A pixel student's cache keys are its flat state observations ("state"), so stores and
        lookups are those of state students."""
        assert self.label_source is not None and buffer.env_states is not None
        t0 = time.perf_counter()
        t, e = buffer.buffer_size, buffer.n_envs
        observations = buffer.observations
        flat = observations["state"] if isinstance(observations, dict) else observations
        obs = flat.reshape(t * e, -1).astype(np.float32)
        states = buffer.env_states.reshape(t * e, -1)
        actions, kind = self.label_source.answer(obs)
        teacher_action = np.zeros((t * e, buffer.action_dim), np.float32)
        mask = np.asarray(kind) != NONE
        if mask.any():
            teacher_action[mask] = actions[mask]
        miss = np.flatnonzero(~mask)
        if self.live_budget is not None and len(miss) > self.live_budget:
            keep = np.random.default_rng(self.num_timesteps).choice(
                len(miss), self.live_budget, replace=False)
            miss = np.sort(miss[keep])
        if len(miss):
            live = np.asarray(self._label_live(buffer, miss, states[miss]), np.float32)
            ok = np.isfinite(live).all(1)
            teacher_action[miss[ok]] = live[ok]
            mask[miss[ok]] = True
            self.live_teacher_calls += len(miss)
            rows = miss[ok]
            self.label_source.insert(self.label_source.keys(obs[rows]), obs[rows],
                                     states[rows], live[ok])
        if self.answer_audit:
            self._audit_answers(buffer, kind, actions, states, teacher_action)
        counts = np.bincount(np.asarray(kind, np.int64), minlength=len(ANSWER_KINDS))
        self.cache_lookups += len(obs)
        for code, name in enumerate(ANSWER_KINDS[1:], start=1):
            self.answers[name] = self.answers.get(name, 0) + int(counts[code])
            self.logger.record(f"distill/answer_{name}", float(counts[code]) / len(obs))
        self.cache_hits += int(counts[EXACT] + counts[NEIGHBOUR])
        buffer.set_labels(teacher_action.reshape(t, e, -1), mask.reshape(t, e))
        self.logger.record("distill/cache_hit_rate", float(counts[EXACT] + counts[NEIGHBOUR])
                           / len(obs))
        self.logger.record("distill/live_teacher_calls", self.live_teacher_calls)
        self.logger.record("distill/teacher_renders", self.teacher_renders)
        self.logger.record("distill/labelled_fraction", float(mask.mean()))
        self.logger.record("time/label_s", time.perf_counter() - t0)
        logger.debug("rollout labels: %s, %d live, %d unlabelled", counts[1:].tolist(),
                     len(miss), int((~mask).sum()))

    def _audit_answers(self, buffer: RPDRolloutBuffer | RPDDictRolloutBuffer, kind: np.ndarray,
                       answers: np.ndarray, states: np.ndarray,
                       teacher_action: np.ndarray) -> None:
        """Ask the live teacher about up to `answer_audit` answered states of the rollout
        and record the answers' squared error (summed over action dims) by kind; the audited
        rows train on the live label. Audit calls are counted apart from live calls."""
        answered = np.flatnonzero(np.asarray(kind) != NONE)
        if not len(answered):
            return
        rng = np.random.default_rng(self.num_timesteps + 1)
        rows = np.sort(rng.choice(answered, min(self.answer_audit, len(answered)),
                                  replace=False))
        live = np.asarray(self._label_live(buffer, rows, states[rows]), np.float32)
        ok = np.isfinite(live).all(1)
        rows, live = rows[ok], live[ok]
        self.audit_calls += len(ok)
        error = ((answers[rows] - live) ** 2).sum(1)
        teacher_action[rows] = live
        for code, name in enumerate(ANSWER_KINDS[1:], start=1):
            sel = np.asarray(kind)[rows] == code
            if sel.any():
                total, n = self.answer_error.get(name, (0.0, 0))
                self.answer_error[name] = (total + float(error[sel].sum()), n + int(sel.sum()))
                self.logger.record(f"distill/answer_error_{name}", float(error[sel].mean()))

    def _label_live(self, buffer: RPDRolloutBuffer | RPDDictRolloutBuffer, rows: np.ndarray,
                    states: np.ndarray) -> np.ndarray:
        """Live teacher actions [N, A] for the flattened transitions `rows` (states [N, S]):
        from the student's own frames when a `frame_labeller` is set, else by restoring each
        state (and rendering the teacher's camera, counted in `teacher_renders`)."""
        if self.frame_labeller is not None and isinstance(buffer.observations, dict):
            obs = buffer.observations
            rgb = obs["rgb"].reshape(-1, *obs["rgb"].shape[2:])[rows]
            images = np.ascontiguousarray(rgb.transpose(0, 2, 3, 1))  # CHW -> HWC
            proprio = obs["proprio"].reshape(-1, obs["proprio"].shape[-1])[rows]
            return self.frame_labeller(images, proprio, states)
        assert self.label_source is not None
        if self.label_renders:
            self.teacher_renders += len(rows)
        return self.label_source.label_live(states)

    # ---- update ---------------------------------------------------------------------------

    def _evaluate(self, obs: th.Tensor, actions: th.Tensor
                  ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, Any]:
        """ActorCriticPolicy.evaluate_actions that also returns the action distribution
        (so the distill term uses the same forward pass, with gradient)."""
        p = self.policy
        features = p.extract_features(obs)
        if p.share_features_extractor:
            latent_pi, latent_vf = p.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = p.mlp_extractor.forward_actor(pi_features)
            latent_vf = p.mlp_extractor.forward_critic(vf_features)
        dist = p._get_action_dist_from_latent(latent_pi)
        return p.value_net(latent_vf), dist.log_prob(actions), dist.entropy(), dist

    def distill_term(self, dist: Any, teacher_action: th.Tensor, mask: th.Tensor) -> th.Tensor:
        """The distillation loss of one minibatch (see rpd.student.losses).

        Args:
            dist: SB3 action distribution of the minibatch (DiagGaussianDistribution).
            teacher_action: [B, A]; mask: [B] bool.
        """
        if self.distill == "bc":
            return bc_distill(dist.log_prob(teacher_action), mask)
        mean = dist.distribution.mean  # μ(s) with gradient
        fn = mse_distill if self.distill == "mse" else l1_distill
        return fn(mean, teacher_action, mask)

    def label_replay_buffer(self) -> LabelReplay | None:
        """The label replay of capacity `label_replay` (None for 0), made empty on first use
        and when the capacity changes (a resumed run given another --label-replay)."""
        if self.label_replay <= 0:
            self.replay = None
        elif self.replay is None or self.replay.capacity != self.label_replay:
            self.replay = LabelReplay(self.label_replay, self.seed or 0)
        return self.replay

    def _replay_term(self, n: int) -> th.Tensor:
        """The distill term on n transitions drawn from the label replay."""
        replay = self.label_replay_buffer()
        assert replay is not None
        obs, teacher_action = replay.sample(n)
        dist = self.policy.get_distribution(obs_as_tensor(obs, self.device))  # type: ignore[arg-type]
        return self.distill_term(dist, th.as_tensor(teacher_action, device=self.device),
                                 th.ones(n, dtype=th.bool, device=self.device))

    def train(self) -> None:
        """One PPO update on the rollout (`_update`), timed in `update_seconds`, then the
        learn callback's `UpdateEndCallback.on_update_end`."""
        t0 = time.perf_counter()
        try:
            self._update()
        finally:
            self.update_seconds += time.perf_counter() - t0
        _update_end(self._learn_callback)

    def _update(self) -> None:
        """SB3's PPO.train with `+ λ · distill` in the loss (marked `# --- RPD`)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        entropy_losses: list[float] = []
        pg_losses: list[float] = []
        value_losses: list[float] = []
        clip_fractions: list[float] = []
        # --- RPD ---
        lam = self.lambda_schedule(self.num_timesteps) if self.label_source is not None else 0.0
        if lam > 0:
            self._log_label_agreement()
        distill_losses: list[float] = []
        grad_norms: list[float] = []
        replay = self.label_replay_buffer()
        # --- end RPD ---
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()
                values, log_prob, entropy, dist = self._evaluate(rollout_data.observations,
                                                                 actions)
                values = values.flatten()
                advantages = rollout_data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
                if self.clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())
                if entropy is None:
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                # --- RPD: + λ · distill over the labelled transitions of the minibatch ---
                if lam > 0:
                    distill_loss = self.distill_term(dist, rollout_data.teacher_action,
                                                     rollout_data.label_mask)
                    if replay is not None and len(replay):
                        distill_loss = (distill_loss + self._replay_term(len(actions))) / 2
                    distill_losses.append(distill_loss.item())
                    loss = loss + lam * distill_loss
                # --- end RPD ---
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    logger.debug("early stop at epoch %d: approx kl %.3f", epoch, approx_kl_div)
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                # --- RPD: log the pre-clip norm (max_grad_norm clips PPO + λ·distill together)
                grad_norms.append(float(th.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                                                    self.max_grad_norm)))
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(),
                                           self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        # --- RPD ---
        self.logger.record("distill/lambda", lam)
        if grad_norms:
            self.logger.record("train/grad_norm", float(np.mean(grad_norms)))
        self.logger.record("train/epochs_done", epoch + 1 if continue_training else epoch)
        if distill_losses:
            self.logger.record("train/distill_loss", float(np.mean(distill_losses)))
        # after the update, so the next rollout and its update share one normalisation
        self._update_obs_norm(self.rollout_buffer.observations)  # type: ignore[arg-type]
        if replay is not None and lam > 0:  # the update used this rollout's labels
            buffer = self.rollout_buffer
            rows = np.flatnonzero(buffer.label_mask)  # flat [T*E] after get()
            obs = buffer.observations
            replay.add({k: v[rows] for k, v in obs.items()} if isinstance(obs, dict)
                            else obs[rows], buffer.teacher_action[rows])
            self.logger.record("distill/replay_size", len(replay))
        # --- end RPD ---

    def _update_obs_norm(self, observations: np.ndarray) -> None:
        """Fold observations into the running statistics of a `NormalizedFlatten` features
        extractor (no-op for other policies)."""
        p = self.policy
        extractors = {id(e): e for e in (getattr(p, name, None) for name in (
            "features_extractor", "pi_features_extractor", "vf_features_extractor"))
            if e is not None}
        for extractor in extractors.values():
            update = getattr(extractor, "update", None)
            if update is None:
                continue
            if isinstance(observations, dict):
                space = self.observation_space
                update({k: np.asarray(v).reshape(-1, *space[k].shape)  # type: ignore[index]
                        for k, v in observations.items()})
            else:
                update(np.asarray(observations).reshape(-1, *self.observation_space.shape))

    def _log_label_agreement(self) -> None:
        """Log how the mean of the policy that collected the rollout compares with its labels,
        per action dim (distill/mse_dim_i) and in the gripper's sign (distill/gripper_agreement).
        """
        buffer = self.rollout_buffer
        mask = th.as_tensor(buffer.label_mask.reshape(-1), device=self.device)
        if not bool(mask.any()):
            return
        if isinstance(buffer.observations, dict):
            obs: Any = {k: v.reshape(-1, *self.observation_space[k].shape)  # type: ignore[index]
                        for k, v in buffer.observations.items()}
        else:
            obs = buffer.observations.reshape(-1, *buffer.obs_shape)
        target = th.as_tensor(buffer.teacher_action.reshape(-1, buffer.action_dim),
                              device=self.device)
        with th.no_grad():
            mean = self.policy.get_distribution(
                obs_as_tensor(obs, self.device)).distribution.mean  # type: ignore[arg-type]
        for i, err in enumerate(per_dim_squared_error(mean, target, mask).tolist()):
            self.logger.record(f"distill/mse_dim_{i}", err)
        self.logger.record("distill/gripper_agreement",
                           sign_agreement(mean[:, -1], target[:, -1], mask))

    # ---- offline phase --------------------------------------------------------------------

    def fit_offline(self, obs: np.ndarray | dict[str, np.ndarray], teacher_action: np.ndarray,
                    steps: int, batch_size: int = 256, seed: int = 0, shift: int = 0,
                    progress: Callable[[int], None] | None = None) -> list[float]:
        """Fit the policy mean to cached teacher actions (supervised MSE, no env steps).

        Args:
            obs: Student observations: [N, D] (state student) or, for a pixel student, a dict
                of its keys (`rpd.data.views.STUDENT_KEYS`) with "rgb" [N, H, W, 3] uint8 as
                rendered (channel-last, like the env's frames).
            teacher_action: [N, A].
            steps: Gradient steps.
            batch_size: Minibatch size.
            seed: Minibatch sampling seed.
            shift: A pixel student's frames are shifted by up to this many pixels each way
                (edges replicated; `random_shift`), a new shift per frame and step.
            progress: Called with the number of steps newly done (every 20 and at the end).

        Returns:
            The MSE of each step (summed over action dims, as `mse_distill`).
        """
        n = len(teacher_action)
        if steps <= 0 or n == 0:
            return []
        if isinstance(self.observation_space, spaces.Dict):
            if not isinstance(obs, dict):
                raise ValueError("a pixel student's offline phase needs its observations by key")
            obs = channel_first(obs)

            shifts = th.Generator().manual_seed(seed)

            def batch(idx: np.ndarray) -> Any:
                tensors = obs_as_tensor({k: v[idx] for k, v in obs.items()}, self.device)
                if shift > 0:
                    tensors["rgb"] = random_shift(tensors["rgb"], shift, shifts)
                return tensors
        else:
            obs_t = th.as_tensor(obs, dtype=th.float32, device=self.device)

            def batch(idx: np.ndarray) -> Any:
                return obs_t[idx]
        self._update_obs_norm(obs)
        self.policy.set_training_mode(True)
        act_t = th.as_tensor(teacher_action, dtype=th.float32, device=self.device)
        ones = th.ones(n, dtype=th.bool, device=self.device)
        opt = th.optim.Adam(self.policy.parameters(), lr=self.lr_schedule(1.0))
        rng = np.random.default_rng(seed)
        history = []
        reported = 0
        for step in range(1, steps + 1):
            idx = rng.integers(0, n, min(batch_size, n))
            dist = self.policy.get_distribution(batch(idx))
            loss = mse_distill(dist.distribution.mean, act_t[idx], ones[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
            if progress is not None and (step % 20 == 0 or step == steps):
                progress(step - reported)
                reported = step
        self.policy.set_training_mode(False)
        return history
