"""`python -m choi` and `choi generate --jobs` split across processes (torchrun / accelerate launch), on CPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from choi.jobs import Job, Summary, merge_summaries, process_share

pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict[str, str]:
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}  # fmt: skip


def test_python_dash_m_choi_is_the_choi_command():
    done = subprocess.run([sys.executable, "-m", "choi", "--version"], capture_output=True, text=True, env=_env())
    assert done.returncode == 0 and done.stdout.startswith("choi ")
    bad = subprocess.run([sys.executable, "-m", "choi", "eval"], capture_output=True, text=True, env=_env())
    assert bad.returncode == 2 and bad.stderr.startswith("choi: error:")


def test_shares_are_disjoint_and_cover_the_batch():
    jobs = [Job(id=str(i), line=i) for i in range(7)]
    shares = [process_share(jobs, r, 3) for r in range(3)]
    assert [[j.id for j in s] for s in shares] == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    with pytest.raises(ValueError, match="not in"):
        process_share(jobs, 3, 3)
    parts = [
        Summary(3, done=["0", "6"], failed=[("3", "boom")]),
        Summary(2, skipped=["1", "4"]),
        Summary(2, done=["5"]),
    ]
    merged = merge_summaries(jobs, parts)
    assert merged.total == 7 and merged.done == ["0", "5", "6"] and merged.skipped == ["1", "4"]
    assert merged.failed == [("2", "no process ran it"), ("3", "boom")]


@pytest.fixture
def batch(tmp_path):
    """Five requests on plain-background references, as `choi generate --jobs` reads them."""
    human = np.full((64, 64, 3), 240, np.uint8)
    human[10:60, 24:40] = (200, 120, 90)
    obj = np.full((64, 64, 3), 240, np.uint8)
    obj[30:50, 10:54] = (30, 160, 60)
    Image.fromarray(human).save(tmp_path / "human.png")
    Image.fromarray(obj).save(tmp_path / "object.png")
    lines = [{"id": f"job{k}", "human": "human.png", "object": "object.png", "interaction": "kick ball", "seed": k}
             for k in range(5)]  # fmt: skip
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return jobs_file


TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed")
def test_torchrun_two_processes_split_the_jobs(batch, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "choi", "-v", "generate", "--jobs", str(batch),
               "--out", str(out), "--model", str(tiny_model_dir), "--steps", "2", "--mask-steps", "2"]  # fmt: skip

    first = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    ran = re.findall(r"process (\d) of 2 ran job (job\d)", log)
    assert sorted(job for _, job in ran) == [f"job{k}" for k in range(5)]  # each job exactly once
    assert {job: int(rank) for rank, job in ran} == {f"job{k}": k % 2 for k in range(5)}  # by both processes
    assert sorted(p.name for p in out.iterdir()) == [f"job{k}" for k in range(5)]
    assert all((out / f"job{k}" / "choi.json").is_file() for k in range(5))
    summaries = re.findall(r"^5 jobs: .*$", log, flags=re.M)
    assert summaries == ["5 jobs: 5 done, 0 already done, 0 failed (2 processes)"]  # the main process's alone

    # A re-run after a lost job redoes only that one.
    shutil.rmtree(out / "job3")
    again = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert re.findall(r"process (\d) of 2 ran job (job\d)", log) == [("1", "job3")]
    assert re.findall(r"^5 jobs: .*$", log, flags=re.M) == ["5 jobs: 1 done, 4 already done, 0 failed (2 processes)"]


def test_a_finished_command_tears_down_its_process_group(batch, tmp_path):
    # left to interpreter shutdown, gloo's threads abort some exits (SIGABRT): 8 of 25 two-process runs of a
    # bare all_gather here, 0 of 25 with the teardown
    import torch.distributed as dist

    from choi.cli import main

    out = tmp_path / "out"
    for k in range(5):  # every job done: the command loads no model
        (out / f"job{k}").mkdir(parents=True)
        (out / f"job{k}" / "choi.json").write_text("{}")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        assert main(["generate", "--jobs", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
        assert dist.is_initialized()  # a failed command leaves it: another rank may still be in a collective
        assert main(["generate", "--jobs", str(batch), "--out", str(out)]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
