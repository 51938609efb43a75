"""The shared training loop: it trains, logs, checkpoints, and resumes exactly."""

import json

import pytest
import torch
import torch.nn.functional as F

from choi.errors import ChoiError
from choi.models.evaluators import InteractionRecognizer
from choi.training.loop import TrainConfig, train


class ToyTask:
    """Random images with labels that depend on the mean colour: learnable in a few steps."""

    name = "toy"

    def __init__(self, crash_after: int | None = None):
        self.crash_after = crash_after
        self.served = 0

    def build_model(self):
        return InteractionRecognizer(in_channels=3, num_classes=2, widths=(8, 16))

    def batches(self, epoch: int):
        g = torch.Generator().manual_seed(epoch)
        for _ in range(3):  # 3 batches per epoch: resuming must cross an epoch boundary correctly
            if self.crash_after is not None and self.served >= self.crash_after:
                raise KeyboardInterrupt
            self.served += 1
            x = torch.rand(4, 3, 16, 16, generator=g)
            yield {"x": x, "y": (x.mean((1, 2, 3)) > 0.5).long()}

    def loss(self, model, batch):
        logits = model(batch["x"])
        return F.cross_entropy(logits, batch["y"]), {}

    def validate(self, model, out_dir, step):
        return {"marker": 1.0}

    def config(self):
        return {"toy": True}


CFG = TrainConfig(steps=8, batch_size=4, lr=1e-2, warmup_steps=2, checkpoint_every=2, log_every=1)


def _weights(path):
    return InteractionRecognizer.from_pretrained(path).state_dict()


def test_train_writes_run_and_log(tmp_path):
    final = train(ToyTask(), CFG, tmp_path / "run")
    assert (final / "config.json").exists()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["steps"] == 8 and config["task"] == {"toy": True}
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, 9))
    assert any("val/marker" in line for line in lines)


def test_resume_is_exact(tmp_path):
    straight = train(ToyTask(), CFG, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(ToyTask(crash_after=5), CFG, tmp_path / "b")  # dies after step 5; checkpoint at step 4
    resumed = train(ToyTask(), CFG, tmp_path / "b", resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_refuses_non_empty_run_without_resume(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("x")
    with pytest.raises(ChoiError, match="not empty"):
        train(ToyTask(), CFG, tmp_path / "run")
    (tmp_path / "file").write_text("x")  # a file, or a folder under one: one line, not NotADirectoryError
    with pytest.raises(ChoiError, match="exists and is not a folder"):
        train(ToyTask(), CFG, tmp_path / "file")
    with pytest.raises(ChoiError, match="cannot create --out folder .* is a file"):
        train(ToyTask(), CFG, tmp_path / "file" / "run")
