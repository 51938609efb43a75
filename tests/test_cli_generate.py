"""`choi generate` (single requests and --jobs batches) and the help of every subcommand.

The pipeline is the real CHOIPipeline on a tiny, randomly initialised choi-tiny-family model folder
(tests/tiny_choi.py): these tests check inputs, outputs, errors and batches through the real thing.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pytest
from PIL import Image

from choi import jobs
from choi.cli import build_parser, main


@pytest.fixture
def refs(tmp_path):
    """Person and object references on plain backgrounds, a background, and a colour-coded mask."""
    folder = tmp_path / "refs"
    folder.mkdir()
    human = np.full((64, 64, 3), 240, np.uint8)
    human[10:60, 24:40] = (200, 120, 90)
    obj = np.full((64, 64, 3), 240, np.uint8)
    obj[30:50, 10:54] = (30, 160, 60)
    mask = np.zeros((48, 80, 3), np.uint8)
    mask[8:40, 10:30] = (230, 40, 40)
    mask[20:40, 40:70] = (40, 90, 230)
    for name, array in (("human", human), ("object", obj), ("background", np.full((48, 80, 3), 90, np.uint8))):
        Image.fromarray(array).save(folder / f"{name}.png")
    Image.fromarray(mask).save(folder / "mask.png")
    (folder / "notes.png").write_text("not an image")
    return folder


@pytest.fixture
def fake(monkeypatch, tiny_pipeline):
    """The real tiny pipeline, its loads and calls recorded; 'carry suitcase' fails like a model crash."""
    loads, calls = [], []
    stage = tiny_pipeline.image_stage

    def image_stage(inputs, layouts, steps, guidance, options, callback):
        calls.append({"interaction": inputs.interaction, "steps": steps, "guidance": guidance, "options": options,
                      "inputs": inputs, "layouts": layouts})  # fmt: skip
        if inputs.interaction == "carry suitcase":
            raise RuntimeError("simulated model failure\nsecond line")
        return stage(inputs, layouts, steps, guidance, options, callback)

    def load_pipeline(model=None, device="cpu", dtype="float32", offload=False):
        loads.append((model, device, dtype))
        return tiny_pipeline

    monkeypatch.setattr(tiny_pipeline, "image_stage", type("Stage", (), {
        "__call__": staticmethod(image_stage), "default_size": stage.default_size,
        "check_interaction": staticmethod(stage.check_interaction)})())  # fmt: skip
    monkeypatch.setattr(jobs, "load_pipeline", load_pipeline)
    return type("Recorder", (), {"loads": loads, "calls": calls})


def _request(refs, **extra):
    args = ["generate", "--human", str(refs / "human.png"), "--object", str(refs / "object.png")]
    args += ["--interaction", extra.pop("interaction", "riding a bike")]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("choi: error: ") and err.count("\n") == 1, err
    return err


def test_generate_writes_images_masks_references_and_json(refs, fake, tmp_path):
    out = tmp_path / "out"
    code = main(_request(refs, background=refs / "background.png", box="0.1,0.2,0.9,1", seed=7, num_images=2,
                         steps=2, guidance=1.5, mask_steps=4, out=out))  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["choi.json", "reference_human.png", "reference_object.png"] + [f"image_{k}.png" for k in range(2)]
        + [f"mask_{k}_{r}.png" for k in range(2) for r in ("human", "object", "preview")]
    )  # fmt: skip
    record = json.loads((out / "choi.json").read_text())
    assert record["seeds"] == [7, 8] and record["interaction_class"] == "ride_bicycle"
    assert record["request"]["box"] == [0.1, 0.2, 0.9, 1.0] and record["request"]["steps"] == 2
    assert record["stage1"]["num_inference_steps"] == 4 and record["stage2"]["steps"] == 2
    assert record["stage2"]["guidance"] == 1.5 and record["options"]["layout_candidates"] == 2  # the folder's default
    call = fake.calls[-1]
    assert call["inputs"].box == (0.1, 0.2, 0.9, 1.0) and call["inputs"].background.shape == (48, 80, 3)
    assert Image.open(out / "image_0.png").size == (80, 48)
    assert Image.open(out / "reference_human.png").mode == "RGBA"
    assert fake.loads == [("choi-tiny", "cpu", "float32")]


def test_family_options_from_the_command_line_and_jobs(refs, fake, tmp_path, capsys, caplog):
    assert main(_request(refs, out=tmp_path / "a")) == 0
    assert fake.calls[-1]["options"].fit_object is True and fake.calls[-1]["options"].prior_strength == (0.5, 1.0)
    args = [*_request(refs, out=tmp_path / "b"), "--set", "fit_object=false", "--set", "prior_strength=0.25,1"]
    assert main([*args, "--set", "layout_candidates=1"]) == 0
    options = fake.calls[-1]["options"]
    assert options.fit_object is False and options.prior_strength == (0.25, 1.0) and options.layout_candidates == 1
    record = json.loads((tmp_path / "b" / "choi.json").read_text())
    assert record["request"]["options"]["fit_object"] == "false" and record["options"]["fit_object"] is False
    jobs_file = tmp_path / "jobs.jsonl"
    line = {"human": str(refs / "human.png"), "object": str(refs / "object.png"), "interaction": "ride bicycle"}
    jobs_file.write_text(json.dumps({**line, "id": "off", "options": {"fit_object": False}}) + "\n")
    assert main(["generate", "--jobs", str(jobs_file), "--out", str(tmp_path / "jobs")]) == 0
    assert fake.calls[-1]["options"].fit_object is False
    for bad, message in (
        ({"options": {"fit_object": 2}}, "option fit_object must be true or false"),
        ({"fit_object": False}, "a model option now"),
        ({"options": {"warp": 1}}, "choi-tiny has no option 'warp'"),
    ):
        jobs_file.write_text(json.dumps({**line, **bad}) + "\n")
        err = _one_line_error_last(capsys, main(["generate", "--jobs", str(jobs_file), "--out", str(tmp_path / "x")]))
        assert "1 of 1 jobs failed" in err and message in caplog.text
    for option, message in (
        ("prior_strength=2,0", "prior strength must be two numbers in [0, 1]"),
        ("layout_candidates=0", "option layout_candidates must be a whole number in [1, 64], got 0"),
        ("layout_candidates=2.5", "option layout_candidates must be a whole number"),
        ("nonsense", "--set takes key=value"),
        ("zoom=maybe", "option zoom: cannot read 'maybe'"),
    ):
        err = _one_line_error(capsys, main([*_request(refs, out=tmp_path / "c"), "--set", option]))
        assert message in err and not (tmp_path / "c").exists()


def test_generate_with_a_mask_file(refs, fake, tmp_path):
    assert main(_request(refs, mask=refs / "mask.png", background=refs / "background.png", out=tmp_path / "out")) == 0
    layouts = fake.calls[-1]["layouts"]
    assert layouts.human_masks[0, 8:40, 10:30].all() and layouts.object_masks[0, 20:40, 40:70].all()
    assert not layouts.human_masks[0, 0:8].any() and layouts.metadata == {"source": "user"}


@pytest.mark.parametrize(
    "change,message,loads",
    [
        ({"human": "missing.png"}, "not found", False),
        ({"object": "notes.png"}, "not an image", True),
        ({"background": "."}, "not found", False),
        ({"box": "0.5,0.5,1.2,0.9"}, "box", False),
        ({"box": "0.5,0.5,0.5,0.9"}, "box", False),
        ({"box": "0.9,0.5,0.1,0.6"}, "box", False),
        ({"box": "a,b,c,d"}, "box", False),
        ({"interaction": "juggling a cat"}, "unknown interaction", True),
        ({"interaction": "x" * 301}, "at most 300", False),
        ({"num_images": 0}, "num_images", False),
        ({"num_images": 17}, "num_images", False),
        ({"steps": 0}, "steps", False),
        ({"guidance": -1}, "guidance", False),
        ({"guidance": "inf"}, "guidance", False),
        ({"mask_guidance": "nan"}, "mask_guidance", False),
        ({"seed": -3}, "seed", False),
        ({"seed": 2**64}, "seed", False),
        ({"mask": "notes.png"}, "mask image", True),
        ({"mask": "background.png"}, "must contain both the person", True),
    ],
)
def test_bad_inputs_fail_in_one_line_and_write_nothing(refs, fake, tmp_path, capsys, change, message, loads):
    extra = dict(change)
    for key in ("human", "object", "background", "mask"):
        if key in extra:
            extra[key] = refs / extra[key]
    args = _request(refs, **{k: v for k, v in extra.items() if k not in ("human", "object")}, out=tmp_path / "out")
    for key in ("human", "object"):
        if key in extra:
            args[args.index(f"--{key}") + 1] = str(extra[key])
    err = _one_line_error(capsys, main(args))
    assert message in err
    assert not (tmp_path / "out").exists()
    assert bool(fake.loads) == loads  # what needs no model is rejected before one loads


def test_option_combinations(refs, fake, tmp_path, capsys):
    _one_line_error(capsys, main(["generate", "--human", str(refs / "human.png"), "--out", str(tmp_path / "o")]))
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("{}\n")
    err = _one_line_error(capsys, main([*_request(refs), "--jobs", str(jobs_file), "--out", str(tmp_path / "o")]))
    assert "--jobs" in err
    _one_line_error(capsys, main(["generate", "--jobs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists()


def test_cuda_without_a_gpu_is_one_line(refs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    err = _one_line_error(capsys, main([*_request(refs), "--device", "cuda", "--out", str(tmp_path / "o")]))
    assert "cuda" in err.lower()


def test_jobs_batch_reports_failures_goes_on_and_skips_done_jobs(refs, fake, tmp_path, capsys, caplog):
    lines = [
        {"id": "a", "human": "refs/human.png", "object": "refs/object.png", "interaction": "ride bicycle", "seed": 1},
        {"human": "refs/human.png", "object": "refs/missing.png", "interaction": "kick ball"},
        "{not json",
        {"id": "crash", "human": "refs/human.png", "object": "refs/object.png", "interaction": "carry suitcase"},
        {"id": "b", "human": "refs/human.png", "object": "refs/object.png", "interaction": "kick ball",
         "box": [0.1, 0.1, 0.9, 0.9], "num_images": 2},
        {"id": "c", "human": "refs/human.png", "object": "refs/object.png", "interaction": "fly kite", "model": "x"},
    ]  # fmt: skip
    caplog.set_level(logging.INFO, "choi")
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n# done\n")
    out = tmp_path / "batch"
    args = ["generate", "--jobs", str(jobs_file), "--out", str(out), "--steps", "3", "--seed", "1234"]
    err = _one_line_error_last(capsys, main(args))
    assert "4 of 6 jobs failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    assert json.loads((out / "a" / "choi.json").read_text())["seeds"] == [1]  # the line's own seed wins
    assert json.loads((out / "b" / "choi.json").read_text())["seeds"] == [1234, 1235]
    assert all(c["steps"] == 3 for c in fake.calls)  # the command-line default reached every job
    log = caplog.text  # one line per failed job
    assert "job 2 (line 2) failed" in log and "missing.png" in log and "line 3" in log
    assert "RuntimeError: simulated model failure" in log and "second line" not in log
    assert "set for the whole batch" in log and "6 jobs: 2 done, 0 already done, 4 failed" in log

    # A re-run skips the done jobs; the failed ones are tried again.
    calls = len(fake.calls)
    _one_line_error_last(capsys, main(args))
    assert [c["interaction"] for c in fake.calls[calls:]] == ["carry suitcase"]
    assert "6 jobs: 0 done, 2 already done, 4 failed" in caplog.text


def _one_line_error_last(capsys, code: int) -> str:
    """Batch runs log one line per failed job, then end with the one-line summary error."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.splitlines()[-1].startswith("choi: error: ") and "Traceback" not in err
    return err


def test_job_ids_must_be_safe_and_unique(tmp_path):
    base = {"human": "h.png", "object": "o.png", "interaction": "ride bicycle"}
    jobs_file = tmp_path / "jobs.jsonl"
    rows = [{**base, "id": "../escape"}, {**base, "id": "x"}, {**base, "id": "x"}, [1, 2], {**base, "seed": True}]
    jobs_file.write_text("\n".join(json.dumps(r) for r in rows))
    parsed = jobs.read_jobs(jobs_file)
    assert [j.error is None for j in parsed] == [False, True, False, False, False]
    assert parsed[1].request.human == str(tmp_path / "h.png")  # relative to the jobs file


def test_mask_command_writes_masks_references_and_json(refs, fake, tmp_path, capsys):
    out = tmp_path / "masks"
    assert main(["mask", *_request(refs, seed=3, num_images=2, out=out)[1:]]) == 0
    names = sorted(p.name for p in out.iterdir())
    masks = [f"mask_{k}_{r}.png" for k in range(2) for r in ("human", "object", "preview")]
    assert names == sorted(["choi.json", "reference_human.png", "reference_object.png", *masks])
    record = json.loads((out / "choi.json").read_text())
    assert record["seeds"] == [3, 4] and "stage2" not in record and fake.calls == []
    # an edited preview goes back in as the layout
    assert main(_request(refs, mask=out / "mask_0_preview.png", out=tmp_path / "img")) == 0
    assert (fake.calls[-1]["layouts"].human_masks[0] == (np.asarray(Image.open(out / "mask_0_human.png")) > 0)).all()
    with pytest.raises(SystemExit) as exit_:  # stage 2's sampler is not a stage-1 flag
        main(["mask", *_request(refs, out=tmp_path / "m2")[1:], "--steps", "3"])
    assert exit_.value.code == 2 and "unrecognized arguments: --steps" in capsys.readouterr().err


def _subcommands(parser: argparse.ArgumentParser, prefix=()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*prefix, name))


def test_every_help_shows_an_example_and_documents_every_option():
    for path, parser in _subcommands(build_parser()):
        text = parser.format_help()
        assert "example" in text, f"choi {' '.join(path)} --help has no example"
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help or action.choices, f"choi {' '.join(path)}: {action.option_strings} has no help"


def test_a_bad_request_is_refused_before_torch_is_imported(tmp_path):
    # the request's one validator needs neither torch nor diffusers: a typo costs a fraction of a second
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src, examples = root / "src", root / "examples"
    script = ("import sys; from choi.cli import main; code = main(sys.argv[1:]); "
              "print(code, 'torch' in sys.modules, 'diffusers' in sys.modules)")  # fmt: skip
    (tmp_path / "a-file").write_text("not a folder")
    bad_outs = (["--out", str(tmp_path / "a-file")], ["--out", str(tmp_path / "a-file" / "sub")])
    for bad in (["--human", str(tmp_path / "nope.png")], ["--seed", "-1"], ["--box", "0.5,0.5,0.2,0.9"], *bad_outs):
        args = ["generate", "--human", str(examples / "kick_ball_human.png"), "--object",
                str(examples / "ride_bicycle_object.png"), "--interaction", "ride bicycle", "--out",
                str(tmp_path / "out"), *bad]  # fmt: skip
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                              env={"PYTHONPATH": str(src), "PATH": ""})  # fmt: skip
        assert done.stdout.split() == ["2", "False", "False"], (bad, done.stderr[-500:])
        assert done.stderr.startswith("choi: error:") and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
