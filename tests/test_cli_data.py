"""`choi data synth` and `choi data preview` through the command line: results and exit codes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from choi.cli import main
from choi.data import synth
from choi.data.preview import CELL, HEADER, PAD
from choi.data.schema import encode
from choi.data.shards import Manifest, ShardInfo, SplitInfo, iter_samples, read_manifest, write_manifest, write_shard
from fake_samples import FAKE_WORLD_VERSION, fake_render, random_sample

SYNTH = ["data", "synth", "--n", "12", "--split", "test", "--seed", "0", "--resolution", "64", "--shard-size", "5"]


def _one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("choi: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_synth_and_preview_end_to_end(tmp_path, capsys):
    """The real HOI-World renderer, written and read back through the CLI."""
    from choi.world import WORLD_VERSION, render_sample

    data = tmp_path / "data"
    assert main([*SYNTH, "--out", str(data), "--workers", "2"]) == 0
    assert sorted(p.name for p in data.iterdir()) == [
        "manifest.json",
        "test-000000.tar",
        "test-000001.tar",
        "test-000002.tar",
    ]
    manifest = read_manifest(data)
    assert manifest.splits["test"].count == 12 and manifest.generator_version == WORLD_VERSION
    samples = list(iter_samples(data))
    assert len(samples) == 12 and samples[0].image.shape == (64, 64, 3)
    expected = render_sample("test", 7, 0, resolution=64)
    assert samples[7].key == expected.key and (samples[7].image == expected.image).all()

    sheet = tmp_path / "sheets" / "sheet.png"
    assert main(["data", "preview", str(data), "--out", str(sheet), "--n", "4"]) == 0
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.height == HEADER + 4 * (CELL + PAD) + PAD
    assert [p.name for p in sheet.parent.iterdir()] == ["sheet.png"]  # no temp file left


@pytest.fixture
def fake_world(monkeypatch):
    monkeypatch.setattr(synth, "_world", lambda: (fake_render, FAKE_WORLD_VERSION))


@pytest.fixture
def dataset(tmp_path, fake_world):
    root = tmp_path / "data"
    assert main([*SYNTH, "--out", str(root)]) == 0
    return root


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "0"], "--n must be a positive"),
        (["--shard-size", "0"], "--shard-size must be positive"),
        (["--workers", "0"], "--workers must be positive"),
        (["--seed", "-2"], "--seed must be >= 0"),
    ],
)
def test_synth_bad_numbers(tmp_path, capsys, fake_world, extra, message):
    code = main([*SYNTH, "--out", str(tmp_path / "d"), *extra])
    assert message in _one_line_error(capsys, code)


def test_synth_conflicting_rerun(dataset, capsys):
    code = main([*SYNTH[:3], "13", *SYNTH[4:], "--out", str(dataset)])
    assert "n=12; this run asks for n=13" in _one_line_error(capsys, code)


def test_synth_into_a_folder_that_is_not_a_dataset(tmp_path, capsys, fake_world):
    (tmp_path / "holiday.jpg").write_bytes(b"\xff\xd8")
    code = main([*SYNTH, "--out", str(tmp_path)])
    assert "not a choi dataset" in _one_line_error(capsys, code)


def test_synth_unwritable_out(tmp_path, capsys, fake_world):
    (tmp_path / "file").write_text("x")
    code = main([*SYNTH, "--out", str(tmp_path / "file" / "data")])
    assert "cannot create" in _one_line_error(capsys, code)


def test_preview_errors(tmp_path, dataset, capsys):
    sheet = str(tmp_path / "sheet.png")
    cases = [
        (["data", "preview", str(tmp_path / "nowhere"), "--out", sheet], "does not exist"),
        (["data", "preview", str(tmp_path), "--out", sheet], "no manifest.json"),
        (["data", "preview", str(dataset), "--out", sheet, "--n", "0"], "--n must be a positive"),
        (["data", "preview", str(dataset), "--out", sheet, "--split", "train"], "no split 'train'"),
        (["data", "preview", str(dataset), "--out", str(dataset / "manifest.json" / "x.png")], "cannot write"),
        (["data", "preview", str(dataset), "--out", str(tmp_path)], "is a folder"),
    ]
    for argv, message in cases:
        assert message in _one_line_error(capsys, main(argv)), argv


def test_preview_of_real_data_without_background_or_ids(tmp_path):
    """Real-data sets may lack a background and identities, and vary in size; the sheet copes."""
    samples = [random_sample(f"train-{i:06d}", seed=i, resolution=40 + 30 * i, background=False) for i in range(2)]
    write_shard(tmp_path / "train-000000.tar", (encode(s) for s in samples))
    manifest = Manifest(generator="hico", generator_version="1", resolution=None)
    manifest.splits["train"] = SplitInfo(count=2, shards=[ShardInfo("train-000000.tar", 2)], complete=True)
    write_manifest(tmp_path, manifest)
    assert main(["data", "preview", str(tmp_path), "--out", str(tmp_path / "s.png")]) == 0


@pytest.mark.skipif(shutil.which("choi", path=str(Path(sys.executable).parent)) is None, reason="no console script")
def test_console_script_exit_code(tmp_path):
    choi = shutil.which("choi", path=str(Path(sys.executable).parent))
    result = subprocess.run([choi, *SYNTH, "--out", str(tmp_path), "--n", "-1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "choi: error: --n must be a positive number of samples, got -1\n"
    result = subprocess.run([choi, "data", "synth", "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
