"""The label replay keeps the latest labelled rows aligned and survives a save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rpd.labels.replay import LabelReplay


def test_label_replay_keeps_the_latest_rows_aligned() -> None:
    replay = LabelReplay(5, seed=0)
    for start in (0, 3, 6):  # 9 rows into 5 slots: rows 4..8 remain
        rows = np.arange(start, start + 3)
        replay.add({"rgb": np.repeat(rows, 4).reshape(3, 2, 2).astype(np.uint8),
                    "state": rows[:, None].astype(np.float32)},
                   np.repeat(rows[:, None], 2, axis=1).astype(np.float32))
    assert len(replay) == 5
    obs, actions = replay.sample(200)
    assert set(actions[:, 0].astype(int)) == {4, 5, 6, 7, 8}
    np.testing.assert_array_equal(obs["state"][:, 0], actions[:, 0])
    np.testing.assert_array_equal(obs["rgb"][:, 1, 1], actions[:, 1].astype(np.uint8))
    big = LabelReplay(3)
    big.add(np.arange(8, dtype=np.float32)[:, None], np.arange(8, dtype=np.float32)[:, None])
    assert len(big) == 3 and set(big.sample(50)[1][:, 0]) == {5.0, 6.0, 7.0}


@pytest.mark.parametrize("by_key", [True, False])
def test_label_replay_saved_and_loaded_samples_as_before(tmp_path: Path, by_key: bool) -> None:
    replay = LabelReplay(6, seed=3)
    for start in (0, 4):  # wraps: pos 2
        rows = np.arange(start, start + 4)
        obs = rows[:, None].astype(np.float32)
        replay.add({"rgb": np.repeat(rows, 4).reshape(4, 2, 2).astype(np.uint8), "state": obs}
                   if by_key else obs, np.repeat(obs, 2, axis=1))
    replay.save(tmp_path / "replay.npz", step=640)
    assert [p.name for p in tmp_path.iterdir()] == ["replay.npz"]  # no temporary left
    loaded = LabelReplay.load(tmp_path / "replay.npz", 640, 6)
    assert loaded is not None and (len(loaded), loaded.pos) == (6, 2)
    (obs_a, act_a), (obs_b, act_b) = replay.sample(20), loaded.sample(20)  # the same draws
    np.testing.assert_array_equal(act_a, act_b)
    for a, b in ([(obs_a[k], obs_b[k]) for k in ("rgb", "state")] if by_key
                 else [(obs_a, obs_b)]):
        np.testing.assert_array_equal(a, b)
    loaded.add({k: v[:1] for k, v in obs_b.items()} if by_key else obs_b[:1], act_b[:1])
    assert loaded.pos == 3  # adds go on where the saved one was
    (tmp_path / ".replay.npz.tmp").symlink_to("/dev/full")  # a full disk: the old file stays
    with pytest.raises(OSError, match="No space left on device"):
        loaded.save(tmp_path / "replay.npz", step=700)
    assert [p.name for p in tmp_path.iterdir()] == ["replay.npz"]
    assert LabelReplay.load(tmp_path / "replay.npz", 640, 6) is not None
