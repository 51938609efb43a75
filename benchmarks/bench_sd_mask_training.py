"""choi-sd stage-1 training (`choi train mask --family sd`) on tiny random SD parts: CPU step time and the loss.

Usage:
    python benchmarks/bench_sd_mask_training.py [--threads 1] [--learn-steps 300] [--out benchmarks/results/sd-mask]

- step time of the ``sd`` preset (the full 128 px mask UNet; the tiny parts' encoders are only 32
  wide, so its text and identity projections are smaller than with SD 1.5) at batch 2, and of the
  ``tiny`` preset at 32 px, batch 2 (what the tests run): the time of N + 5 steps minus that of 5
  steps, so loading and saving cancel out; fp32;
- the loss of the tiny preset over ``--learn-steps`` steps on the 8 samples of ``write_tiny_dataset``
  (batch 8, lr 1e-3): the mean of the first and last 30 logged losses. The encoders are random, so
  a falling loss shows that the recipe fits masks, not that it reads text or identity.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from choi.pipelines.sd import make_model_folder
from choi.training.loop import TrainConfig, train
from choi.training.sd_mask import SDMaskTask, SDMaskTrainConfig

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"sd": (128, 3), "tiny": (32, 40)}  # preset: (mask side, timed steps)


def _parts(root: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_samples import write_tiny_dataset
    from sd_components import write_ip_adapter, write_sd_folder

    (root / "data").mkdir()
    model = make_model_folder(root / "model", write_sd_folder(root / "sd"), write_ip_adapter(root / "ip"),
                              resolution=32)  # fmt: skip
    return model, write_tiny_dataset(root / "data")


def _train(model: Path, data: Path, out: Path, preset: str, size: int, steps: int, batch: int, lr: float) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cfg = SDMaskTrainConfig(data=str(data), model=preset, sd_model=str(model), sample_size=size, batch_size=batch,
                            num_workers=0, val_samples=0)  # fmt: skip
    train_cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=min(20, steps // 10 + 1),
                            checkpoint_every=10**9, log_every=1, mixed_precision="no")  # fmt: skip
    task = SDMaskTask(cfg)
    start = time.perf_counter()
    train(task, train_cfg, out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--learn-steps", type=int, default=300)
    parser.add_argument("--out", default=None, help="folder for results.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data = _parts(root)
        results = {"threads": args.threads, "step_ms": {}}
        for preset, (size, timed) in PRESETS.items():
            short = _train(model, data, root / "run", preset, size, 5, 2, 1e-4)
            long = _train(model, data, root / "run", preset, size, 5 + timed, 2, 1e-4)
            results["step_ms"][f"{preset}@{size}px"] = round((long - short) / timed * 1000)
        start = time.perf_counter()
        _train(model, data, root / "learn", "tiny", 32, args.learn_steps, 8, 1e-3)
        lines = [json.loads(line) for line in (root / "learn" / "log.jsonl").read_text().splitlines()]
        losses = [line["loss"] for line in lines if "loss" in line]
        results["learn"] = {"preset": "tiny@32px", "steps": args.learn_steps, "batch": 8, "lr": 1e-3,
                            "seconds": round(time.perf_counter() - start),
                            "first30": round(float(np.mean(losses[:30])), 4),
                            "last30": round(float(np.mean(losses[-30:])), 4)}  # fmt: skip
    print(json.dumps(results, indent=2))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
