"""The teacher-action store (Zarr v3 parts): round trip, concurrency, kills, guardrails."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from rpd.cli import main
from rpd.data import store as store_mod
from rpd.data.store import (
    PARTS_DIR,
    SOURCES,
    KeySpec,
    Rows,
    StoreIdentity,
    TeacherStore,
    compact_store,
)
from rpd.errors import InputError

D, A, S = 5, 3, 7


def identity(**kw: object) -> StoreIdentity:
    base = dict(teacher_fingerprint="f" * 16, env_id="PickCube-v1",
                control_mode="pd_ee_delta_pose", key_spec=KeySpec.fixed(D, [0, 2, 4], 0.5),
                obs_dim=D, action_dim=A, state_dim=S, teacher_kind="cnn-tiny")
    base.update(kw)
    return StoreIdentity(**base)  # type: ignore[arg-type]


def make_rows(n: int, episode: int, key_spec: KeySpec, source: str = "demo") -> Rows:
    """Rows whose every value encodes (episode, step), so a reader can check them."""
    step = np.arange(n)
    obs = episode * 1000.0 + step[:, None] + np.arange(D)[None] / 10.0
    return Rows(key=key_spec.keys(obs), obs=obs, teacher_action=obs[:, :A] * 2,
                env_state=np.tile(obs[:, :1], (1, S)), episode=np.full(n, episode), step=step,
                source=np.full(n, SOURCES.index(source)))


def check_consistent(rows: Rows, key_spec: KeySpec) -> None:
    expect_obs = rows.episode[:, None] * 1000.0 + rows.step[:, None] + np.arange(D)[None] / 10.0
    np.testing.assert_allclose(rows.obs, expect_obs, rtol=1e-6)
    np.testing.assert_allclose(rows.teacher_action, expect_obs[:, :A] * 2, rtol=1e-6)
    np.testing.assert_allclose(rows.key, key_spec.keys(expect_obs), rtol=1e-5)


def test_key_spec_math_and_round_trip() -> None:
    obs = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]])
    spec = KeySpec.from_data(obs, dims=[2, 0])
    assert spec.dims == (0, 2) and spec.method == "std"
    assert spec.offset == (2.0, 4.0) and spec.scale == (1.0, 1.0)
    np.testing.assert_allclose(spec.keys(obs), [[-1, -1], [1, 1]])
    assert KeySpec.from_dict(spec.to_dict()) == spec
    const = KeySpec.from_data(np.ones((4, 2)))
    assert const.scale == (0.01, 0.01)  # constant dims floored, not divided by 0
    fixed = KeySpec.fixed(3, scale=2.0)
    np.testing.assert_allclose(fixed.keys(obs)[0], [0.5, 1.0, 1.5])
    with pytest.raises(InputError, match="--key-dims"):
        KeySpec.fixed(3, [3])


def test_round_trip_counts_and_nan_rejection(tmp_path: Path) -> None:
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    rows = make_rows(10, 1, ident.key_spec)
    bad = make_rows(4, 2, ident.key_spec, source="live")
    bad.teacher_action[1, 0] = np.nan
    bad.teacher_action[3, 2] = np.inf
    assert store.write_part(rows, "demo-x-1").written == 10
    res = store.write_part(bad)
    assert (res.written, res.rejected_nonfinite) == (2, 2)
    again = store.write_part(rows, "demo-x-1")  # same unit: written at most once
    assert again.existed and again.written == 0

    reopened = TeacherStore.open(tmp_path / "s", ident)
    back = reopened.read()
    assert len(back) == 12
    check_consistent(back, ident.key_spec)
    assert np.isfinite(back.teacher_action).all()
    assert sorted(back.step[back.episode == 2].tolist()) == [0, 2]
    assert reopened.refresh_counts() == {"demo": 10, "teacher-rollout": 0,
                                         "noisy-rollout": 0, "live": 2}
    root = zarr.open_group(str(tmp_path / "s"), mode="r")
    assert root.attrs["counts"]["live"] == 2 and root.attrs["schema_version"] == 1
    assert root.attrs["key_spec"] == ident.key_spec.to_dict()
    summary = reopened.summary()
    assert summary.entries == 12 and summary.rejected_nonfinite == 2 and summary.parts == 2
    # Real Zarr v3 arrays: sharded, with the documented dtypes and shapes.
    part = zarr.open_group(str(tmp_path / "s" / PARTS_DIR / "demo-x-1"), mode="r")
    assert part["key"].shape == (10, 3) and part["key"].dtype == np.float32
    assert part["source"].dtype == np.uint8 and part["episode"].dtype == np.int64
    assert part["obs"].metadata.zarr_format == 3 and part["obs"].shards is not None


@pytest.mark.parametrize("change, match", [
    (dict(teacher_fingerprint="0" * 16), "teacher fingerprint"),
    (dict(env_id="PushCube-v1"), "env PickCube-v1"),
    (dict(control_mode="pd_joint_pos"), "control mode"),
    (dict(key_spec=KeySpec.fixed(D, [0, 2, 4], 1.0)), "key spec"),
])
def test_mismatched_store_is_refused(tmp_path: Path, change: dict, match: str) -> None:
    TeacherStore.create_or_open(tmp_path / "s", identity())
    with pytest.raises(InputError, match=match) as err:
        TeacherStore.create_or_open(tmp_path / "s", identity(**change))
    assert "--allow-mismatch" in str(err.value) and "\n" not in str(err.value)
    store = TeacherStore.create_or_open(tmp_path / "s", identity(**change), allow_mismatch=True)
    assert store.identity == identity()  # the store keeps what it was made for


def test_not_a_store_and_newer_schema(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such store"):
        TeacherStore.open(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(InputError, match="not a teacher-action store"):
        TeacherStore.open(tmp_path / "junk")
    with pytest.raises(InputError, match="choose a new path"):
        TeacherStore.create_or_open(tmp_path / "junk", identity())
    TeacherStore.create_or_open(tmp_path / "s", identity())
    root = zarr.open_group(str(tmp_path / "s"), mode="r+")
    root.attrs["schema_version"] = 99
    with pytest.raises(InputError, match="upgrade rpd"):
        TeacherStore.open(tmp_path / "s")


# ---- several processes ---------------------------------------------------------------------


def _writer(path: str, writer: int, shared: list[int], delay: float) -> None:
    store = TeacherStore.open(path)
    spec = store.identity.key_spec
    for i in range(12):
        ep = writer * 100 + i
        store.write_part(make_rows(7 + i, ep, spec), f"own-{ep}")
        time.sleep(delay)
    for ep in shared:  # both writers race for the same units
        store.write_part(make_rows(5, ep, spec), f"shared-{ep}")
    for _ in range(3):
        store.write_part(make_rows(3, 900 + writer, spec, source="live"))


def test_two_processes_write_at_once_every_row_exactly_once(tmp_path: Path) -> None:
    ident = identity()
    TeacherStore.create_or_open(tmp_path / "s", ident)
    ctx = mp.get_context("spawn")
    shared = list(range(500, 510))
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "s"), w, shared, 0.0))
             for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = TeacherStore.open(tmp_path / "s").read()
    check_consistent(rows, ident.key_spec)
    live = rows.source == SOURCES.index("live")
    pairs = list(zip(rows.episode[~live].tolist(), rows.step[~live].tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)  # no duplicates
    expected = sum(7 + i for i in range(12)) * 2 + 5 * len(shared)
    assert int((~live).sum()) == expected
    assert sorted(set(rows.episode[rows.episode >= 500].tolist())) == [*shared, 901, 902]
    assert int(live.sum()) == 2 * 3 * 3  # live parts never collide


def _writer_killed_in_a_part(path: str, inside: Any) -> None:
    """Writes parts until killed; holds inside its third part (written in staging, not yet
    published) and sets `inside` there, so the kill lands mid-part every time."""
    import threading

    store = TeacherStore.open(path)
    spec = store.identity.key_spec
    flush = store_mod.fsync_tree

    def hold_in_third_part(root: Path) -> None:
        if len(store.parts()) >= 2:
            inside.set()
            threading.Event().wait()  # until killed
        flush(root)

    store_mod.fsync_tree = hold_in_third_part
    ep = 0
    while True:
        store.write_part(make_rows(2_000, ep, spec), f"ep-{ep}")
        ep += 1


def test_killed_writer_leaves_a_readable_store_and_resume_completes(tmp_path: Path) -> None:
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    ctx = mp.get_context("spawn")
    inside = ctx.Event()
    proc = ctx.Process(target=_writer_killed_in_a_part, args=(str(tmp_path / "s"), inside))
    proc.start()
    try:
        assert inside.wait(timeout=300), "the writer never reached its third part"
        assert store.staging_dirs()  # killed with a written, unpublished part
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    done = store.finished_units()
    assert done == {"ep-0", "ep-1"}
    rows = store.read()
    check_consistent(rows, ident.key_spec)  # no half-written part is visible
    assert len(rows) == 2_000 * len(done)
    # Resume: a new writer skips finished units and completes the rest, each exactly once.
    before = {p.name: p.path.stat().st_ino for p in store.parts()}
    wanted = [f"ep-{i}" for i in range(len(done) + 2)]
    for i, unit in enumerate(wanted):
        res = store.write_part(make_rows(2_000, i, ident.key_spec), unit)
        assert res.existed == (unit in done)
    after = {p.name: p.path.stat().st_ino for p in store.parts()}
    assert all(after[name] == ino for name, ino in before.items())  # finished parts untouched
    rows = store.read(["episode", "step"])
    assert len(rows) == 2_000 * len(wanted)
    assert sorted(set(rows.episode.tolist())) == list(range(len(wanted)))


def test_compaction_merges_parts_and_a_crashed_compaction_shows_no_duplicates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    for ep in range(4):
        store.write_part(make_rows(6, ep, ident.key_spec), f"u-{ep}")
    store.write_part(make_rows(3, 9, ident.key_spec, source="live"))
    # A compaction that dies after publishing the merged part, before deleting the old ones.
    monkeypatch.setattr(store_mod, "_remove", lambda dirs: None)
    assert compact_store(tmp_path / "s") == (5, 27)
    assert len(list((tmp_path / "s" / PARTS_DIR).iterdir())) == 6
    rows = store.read()
    assert len(rows) == 27
    check_consistent(rows, ident.key_spec)
    monkeypatch.undo()
    store.write_part(make_rows(2, 7, ident.key_spec), "u-7")  # a writer after the merge
    assert compact_store(tmp_path / "s") == (2, 29)
    parts = store.parts()
    assert len(parts) == 1 and len(list((tmp_path / "s" / PARTS_DIR).iterdir())) == 1
    assert {"u-0", "u-3", "u-7"} <= store.finished_units()
    assert store.write_part(make_rows(6, 0, ident.key_spec), "u-0").existed  # merged units too
    rows = store.read()
    check_consistent(rows, ident.key_spec)
    assert store.summary().by_source["live"] == 3


@pytest.mark.parametrize("damage", ["missing array", "empty chunk"])
def test_a_damaged_part_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    """A part that lost an array, or a chunk emptied by a power loss before its data reached
    the disk, is named in one error that says how to fix it (it used to recurse forever)."""
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    store.write_part(make_rows(6, 1, ident.key_spec), "demo-x-1")
    store.write_part(make_rows(4, 2, ident.key_spec), "demo-x-2")
    part = sorted((tmp_path / "s" / PARTS_DIR).iterdir())[0]
    if damage == "missing array":
        import shutil

        shutil.rmtree(part / "obs")
    else:
        chunk = next(p for p in (part / "teacher_action").rglob("*")
                     if p.is_file() and p.name != "zarr.json")
        chunk.write_bytes(b"")
    with pytest.raises(InputError, match=f"part {part.name} .*damaged.*delete"):
        TeacherStore.open(tmp_path / "s").read()


def test_a_part_is_flushed_to_disk_before_it_becomes_visible(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """Every file of a part is fsynced before the rename that publishes it, and the parts
    directory after it (what power loss needs; os.fsync is observed, not replaced)."""
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    res = store.write_part(make_rows(5, 1, ident.key_spec), "demo-x-1")
    final = str(tmp_path / "s" / PARTS_DIR / res.name)
    i = events.index(("rename", final))
    synced_before = {path for kind, path in events[:i] if kind == "fsync"}
    files = {str(p).split(res.name, 1)[1] for p in Path(final).rglob("*") if p.is_file()}
    synced = {p.split(".staging", 1)[-1].split("/", 2)[-1] for p in synced_before}
    assert files and all(f.lstrip("/") in synced for f in files), (files, synced)
    assert len([p for p in synced_before if "teacher_action" in p]) >= 1
    assert len(synced_before) >= len(files)  # every file (and directory) of the part
    assert ("fsync", str(tmp_path / "s" / PARTS_DIR)) in events[i + 1:]


def test_a_slow_duplicate_writer_after_a_compaction_leaves_no_duplicate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer B checked that unit U was not written, then slept; meanwhile writer A wrote U and
    a compaction merged it (removing U's own part). B's rename then succeeds (the name is free
    again): B must notice the merged copy and take its part back."""
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    store.write_part(make_rows(6, 1, ident.key_spec), "demo-x-1")
    store.write_part(make_rows(4, 2, ident.key_spec), "demo-x-2")
    assert compact_store(tmp_path / "s")[0] == 2
    slow = TeacherStore.open(tmp_path / "s")
    monkeypatch.setattr(slow, "has_unit", lambda *unit: False)  # B's check ran before A wrote
    res = slow.write_part(make_rows(6, 1, ident.key_spec), "demo-x-1")
    assert res.existed and res.written == 0
    rows = TeacherStore.open(tmp_path / "s").read()
    assert len(rows) == 10  # every row once
    check_consistent(rows, ident.key_spec)


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 kB tmpfs (needs the right to mount, as root on the test machine)."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_while_writing_a_part_is_one_error_and_loses_nothing(tiny_disk: Path
                                                                         ) -> None:
    from rpd.errors import StorageError

    ident = identity()
    store = TeacherStore.create_or_open(tiny_disk / "s", ident)
    store.write_part(make_rows(10, 1, ident.key_spec), "demo-x-1")
    with pytest.raises(StorageError, match=r"store part .* No space left on device.*intact"):
        for episode in range(2, 200):  # ~100 kB per part (7 arrays x 1000 rows)
            store.write_part(make_rows(1000, episode, ident.key_spec), f"demo-x-{episode}")
    rows = TeacherStore.open(tiny_disk / "s").read()
    check_consistent(rows, ident.key_spec)  # every published part whole, nothing half-written
    assert len(rows) >= 10 and not any((tiny_disk / "s" / ".staging").iterdir())


# ---- readers beside a compaction -----------------------------------------------------------


def _four_parts_of_three_rows(path: Path) -> StoreIdentity:
    ident = identity()
    store = TeacherStore.create_or_open(path, ident)
    for ep in range(4):
        store.write_part(make_rows(3, ep, ident.key_spec), f"u-{ep}")
    return ident


@pytest.mark.parametrize("removed", [2, 4], ids=["compaction-half-way", "compaction-done"])
def test_a_reader_that_listed_before_a_compaction_reads_every_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, removed: int) -> None:
    """The reader lists the parts; then a compaction publishes the merged part and deletes
    `removed` of the 4 old ones; then the reader reads what it listed. Every row comes back."""
    path = tmp_path / "s"
    ident = _four_parts_of_three_rows(path)
    reader = TeacherStore.open(path)
    real_listdir, real_remove = os.listdir, store_mod._remove
    compacted: list[tuple[int, int]] = []

    def listdir_then_compact(d: str | Path = ".") -> list[str]:
        names = real_listdir(d)
        if Path(d) == path / PARTS_DIR and not compacted:
            compacted.append((0, 0))
            monkeypatch.setattr(store_mod, "_remove", lambda dirs: real_remove(dirs[:removed]))
            compacted[0] = compact_store(path)
            monkeypatch.setattr(store_mod, "_remove", real_remove)
        return names

    monkeypatch.setattr(os, "listdir", listdir_then_compact)
    rows = reader.read()
    assert compacted == [(4, 12)]  # the compaction did run between listing and reading
    assert len(rows) == 12
    check_consistent(rows, ident.key_spec)
    assert sorted(zip(rows.episode.tolist(), rows.step.tolist(), strict=True)) == [
        (ep, step) for ep in range(4) for step in range(3)]


def test_parts_that_keep_moving_are_one_clear_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing that is stale every time (a part gone before its metadata is read) is
    retried a bounded number of times, then named in one error, never read as fewer rows."""
    path = tmp_path / "s"
    _four_parts_of_three_rows(path)
    reader = TeacherStore.open(path)
    real_listdir = os.listdir

    def listdir_with_a_vanished_part(d: str | Path = ".") -> list[str]:
        names = real_listdir(d)
        return [*names, "u-gone"] if Path(d) == path / PARTS_DIR else names

    monkeypatch.setattr(os, "listdir", listdir_with_a_vanished_part)
    with pytest.raises(InputError, match=r"parts kept moving.*compaction") as err:
        reader.read()
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# ---- several teachers in one store ---------------------------------------------------------

TEACHER_B = "b" * 16


def _store_of_two_teachers(path: Path) -> tuple[StoreIdentity, StoreIdentity]:
    """A store made for teacher A holding A's units 0-2 and, written with --allow-mismatch,
    teacher B's units 3 and 4 (B's actions are the negated ones, so a mix shows)."""
    ident_a = identity()
    ident_b = identity(teacher_fingerprint=TEACHER_B)
    store_a = TeacherStore.create_or_open(path, ident_a)
    for ep in range(3):
        assert store_a.write_part(make_rows(3, ep, ident_a.key_spec), f"u-{ep}").written == 3
    store_b = TeacherStore.create_or_open(path, ident_b, allow_mismatch=True)
    for ep in (3, 4):
        assert store_b.write_part(_rows_of_b(ep, ident_b), f"u-{ep}",
                                  teacher_fingerprint=TEACHER_B).written == 2
    return ident_a, ident_b


def _rows_of_b(episode: int, ident_b: StoreIdentity) -> Rows:
    rows = make_rows(2, episode, ident_b.key_spec)
    rows.teacher_action = -rows.teacher_action
    return rows


def _check_b(rows: Rows, episodes: list[int]) -> None:
    assert len(rows) == 2 * len(episodes) and sorted(set(rows.episode.tolist())) == episodes
    np.testing.assert_allclose(rows.teacher_action, -rows.obs[:, :A] * 2, rtol=1e-6)


def test_readers_get_only_the_rows_of_their_teacher(tmp_path: Path) -> None:
    path = tmp_path / "s"
    ident_a, ident_b = _store_of_two_teachers(path)
    rows_a = TeacherStore.open(path, ident_a).read()
    assert len(rows_a) == 9 and sorted(set(rows_a.episode.tolist())) == [0, 1, 2]
    check_consistent(rows_a, ident_a.key_spec)  # B's (negated) actions would fail this
    assert len(TeacherStore.open(path).read()) == 9  # a plain open reads the store's teacher
    info = CliRunner().invoke(main, ["cache", "info", "--json", str(path)])
    summary = json.loads(info.stdout)
    assert summary["entries"] == 9 and summary["extra"]["other_teachers"] == {TEACHER_B: 4}
    text = CliRunner().invoke(main, ["cache", "info", str(path)]).stdout
    assert f"{TEACHER_B} (4 entries)" in text and "entries                9\n" in text
    store_b = TeacherStore.open(path, ident_b, allow_mismatch=True)
    _check_b(store_b.read(), [3, 4])
    # Units are done per teacher: B labels a unit A has labelled, and each reads its own.
    assert not store_b.has_unit("u-1")
    res = store_b.write_part(_rows_of_b(1, ident_b), "u-1", teacher_fingerprint=TEACHER_B)
    assert res.written == 2 and store_b.has_unit("u-1")
    _check_b(store_b.read(), [1, 3, 4])
    assert store_b.finished_units() == {"u-1", "u-3", "u-4"}
    assert TeacherStore.open(path, ident_a).finished_units() == {"u-0", "u-1", "u-2"}
    check_consistent(TeacherStore.open(path, ident_a).read(), ident_a.key_spec)


def test_compaction_never_merges_parts_of_different_teachers(tmp_path: Path) -> None:
    path = tmp_path / "s"
    ident_a, ident_b = _store_of_two_teachers(path)
    assert compact_store(path) == (5, 13)  # A's 3 parts and B's 2, each teacher apart
    merged = {}
    for d in (path / PARTS_DIR).iterdir():
        attrs = zarr.open_group(str(d), mode="r").attrs
        merged[attrs["teacher_fingerprint"]] = (attrs["rows"], sorted(attrs["units"]))
    assert merged == {ident_a.teacher_fingerprint: (9, ["u-0", "u-1", "u-2"]),
                      TEACHER_B: (4, ["u-3", "u-4"])}
    rows_a = TeacherStore.open(path, ident_a).read()
    assert len(rows_a) == 9
    check_consistent(rows_a, ident_a.key_spec)
    store_b = TeacherStore.open(path, ident_b, allow_mismatch=True)
    _check_b(store_b.read(), [3, 4])
    # Merged units stay done for their own teacher only.
    assert store_b.write_part(_rows_of_b(3, ident_b), "u-3", teacher_fingerprint=TEACHER_B
                              ).existed
    store_a = TeacherStore.open(path, ident_a)
    assert store_a.write_part(make_rows(3, 3, ident_a.key_spec), "u-3").written == 3


# ---- `rpd cache info` on a damaged root ----------------------------------------------------


def test_cache_info_on_a_store_with_an_empty_key_spec_is_one_line(tmp_path: Path) -> None:
    TeacherStore.create_or_open(tmp_path / "s", identity())
    root = zarr.open_group(str(tmp_path / "s"), mode="r+")
    root.attrs["key_spec"] = {}
    result = CliRunner().invoke(main, ["cache", "info", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert "key_spec" in result.stderr and str(tmp_path / "s") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
