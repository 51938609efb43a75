"""The HOI-World builder, driven by a fake renderer (tests/fake_samples.py) so it runs in seconds.

End-to-end runs with the real renderer are in test_cli_data.py.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from choi.data import synth
from choi.data.shards import MANIFEST_NAME, iter_samples, read_manifest
from choi.data.synth import SynthConfig, build_synth
from choi.errors import ChoiError
from fake_samples import FAKE_WORLD_VERSION, failing_render, fake_render

CFG = SynthConfig(n=11, split="train", seed=3, resolution=64, shard_size=4)


@pytest.fixture(autouse=True)
def fake_world(monkeypatch):
    monkeypatch.setattr(synth, "_world", lambda: (fake_render, FAKE_WORLD_VERSION))


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process build of CFG, to compare every other build against."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth, "_world", lambda: (fake_render, FAKE_WORLD_VERSION))
        build_synth(root, CFG, workers=1)
    return _files(root)


def test_build_layout_and_manifest(tmp_path, reference):
    build_synth(tmp_path, CFG)
    assert sorted(reference) == [MANIFEST_NAME, "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    manifest = read_manifest(tmp_path)
    split = manifest.splits["train"]
    assert split.complete and split.count == 11 and [s.count for s in split.shards] == [4, 4, 3]
    assert all(len(s.sha256) == 64 for s in split.shards)
    assert split.builder == {
        "builder": "choi.data.synth",
        "n": 11,
        "seed": 3,
        "resolution": 64,
        "shard_size": 4,
        "world_version": FAKE_WORLD_VERSION,
    }
    assert manifest.resolution == 64 and manifest.generator == "hoi-world"
    assert manifest.generator_version == FAKE_WORLD_VERSION
    assert any(c["rare"] for c in manifest.classes) and "train 11" in manifest.card
    assert [s.key for s in iter_samples(tmp_path)] == [fake_render("train", i, 3, 64).key for i in range(11)]
    assert _files(tmp_path) == reference


def test_workers_give_the_same_bytes(tmp_path, reference):
    build_synth(tmp_path, CFG, workers=2)
    assert _files(tmp_path) == reference


def test_rerun_of_a_complete_build_changes_nothing(tmp_path, reference):
    build_synth(tmp_path, CFG)
    build_synth(tmp_path, CFG)
    assert _files(tmp_path) == reference


def test_resume_after_a_crash_gives_the_same_bytes(tmp_path, monkeypatch, reference):
    calls = []

    def dying_render(split, index, seed, resolution=128):
        calls.append(index)
        if index == 6:  # in the middle of shard 1
            raise KeyboardInterrupt
        return fake_render(split, index, seed, resolution)

    monkeypatch.setattr(synth, "_world", lambda: (dying_render, FAKE_WORLD_VERSION))
    with pytest.raises(KeyboardInterrupt):
        build_synth(tmp_path, CFG)
    # shard 0 complete, shard 1 absent (not partial), the split marked incomplete
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME, "train-000000.tar"]
    assert not read_manifest(tmp_path).splits["train"].complete
    # a temp file left by a process killed without cleaning up
    (tmp_path / ".train-000001.tar.99999.tmp").write_bytes(b"half a shard")

    monkeypatch.setattr(synth, "_world", lambda: (fake_render, FAKE_WORLD_VERSION))
    build_synth(tmp_path, CFG)
    assert _files(tmp_path) == reference


def test_resume_after_sigkill_gives_the_same_bytes(tmp_path, reference):
    """A real kill -9 of a builder process, then a re-run with the same arguments."""
    script = (
        "import time, sys\n"
        "from fake_samples import fake_render\n"
        "from choi.data import synth\n"
        "def slow(*a, **k):\n"
        "    time.sleep(0.1)\n"
        "    return fake_render(*a, **k)\n"
        "synth._world = lambda: (slow, 'fake-1')\n"
        f"synth.build_synth(sys.argv[1], synth.{CFG!r})\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "train-000000.tar").exists():
            assert proc.poll() is None, "builder exited before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)  # well inside shard 1 (4 samples x 100 ms)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = {p.name for p in tmp_path.iterdir()}
    assert "train-000002.tar" not in left
    assert any(name.startswith(".train-000001.tar.") for name in left), left  # the killed writer's temp file
    build_synth(tmp_path, CFG)
    assert _files(tmp_path) == reference


@pytest.mark.parametrize("workers", [1, 2])
def test_renderer_error_leaves_only_complete_shards(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(synth, "_world", lambda: (failing_render, FAKE_WORLD_VERSION))
    with pytest.raises(RuntimeError, match="renderer bug"):
        build_synth(tmp_path, CFG, workers=workers)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "train-000001.tar" not in left and not [n for n in left if n.endswith(".tmp")], left


def test_train_and_test_share_a_folder(tmp_path):
    build_synth(tmp_path, CFG)
    build_synth(tmp_path, SynthConfig(n=3, split="test", seed=3, resolution=64, shard_size=4))
    manifest = read_manifest(tmp_path)
    assert list(manifest.splits) == ["train", "test"]
    assert "train 11, test 3" in manifest.card
    assert [s.key for s in iter_samples(tmp_path, split="test")] == [f"test-{i:08d}" for i in range(3)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n": 12}, "n=11; this run asks for n=12"),
        ({"seed": 4}, "seed=3; this run asks for seed=4"),
        ({"shard_size": 5}, "shard_size=4; this run asks for shard_size=5"),
        ({"resolution": 128}, "resolution 64, this run needs 128"),
        ({"split": "test", "resolution": 128}, "resolution 64, this run needs 128"),
    ],
)
def test_conflicting_rerun_is_refused(tmp_path, change, message):
    build_synth(tmp_path, CFG)
    before = _files(tmp_path)
    args = {**CFG.__dict__, **change}
    with pytest.raises(ChoiError, match=message):
        build_synth(tmp_path, SynthConfig(**args))
    assert _files(tmp_path) == before


def test_other_world_version_is_refused(tmp_path, monkeypatch):
    build_synth(tmp_path, CFG)
    monkeypatch.setattr(synth, "_world", lambda: (fake_render, "fake-2"))
    with pytest.raises(ChoiError, match="world version fake-1, this run needs fake-2"):
        build_synth(tmp_path, SynthConfig(n=2, split="test", resolution=64))


def test_killed_during_the_first_manifest_write(tmp_path, reference):
    (tmp_path / ".manifest.json.4242.tmp").write_text('{"form')
    build_synth(tmp_path, CFG)
    assert _files(tmp_path) == reference


def test_folder_checks(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ChoiError, match="not empty and is not a choi dataset"):
        build_synth(tmp_path, CFG)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(ChoiError, match="not a folder"):
        build_synth(tmp_path / "notes.txt", CFG)
    with pytest.raises(ChoiError, match="cannot create"):
        build_synth(tmp_path / "notes.txt" / "data", CFG)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "--n must be a positive"),
        ({"n": 5, "shard_size": 0}, "--shard-size must be positive"),
        ({"n": 5, "seed": -1}, "--seed"),
        ({"n": 5, "resolution": 100}, "--resolution"),
        ({"n": 5, "split": "val"}, "split must be one of"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ChoiError, match=message):
        SynthConfig(**kwargs)


def test_bad_workers(tmp_path):
    with pytest.raises(ChoiError, match="--workers must be positive"):
        build_synth(tmp_path, CFG, workers=0)
    assert not any(tmp_path.iterdir())
