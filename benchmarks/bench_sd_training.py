"""choi-sd stage-2 training on tiny random SD parts (tests/sd_components.py): CPU step time and the loss on 8 samples.

Usage:
    python benchmarks/bench_sd_training.py [--threads 1] [--learn-steps 300] [--out benchmarks/results/sd-training]

- step time per path (fp32, bf16 autocast, bf16 + gradient checkpointing; and in fp32 the two
  switches: ``--layout inpaint``, DINOv2 as the identity encoder): batch 2 at 32 px, the time of 45
  steps minus that of 5, so loading and saving cancel out;
- the loss over ``--learn-steps`` steps on the 8 samples of ``write_tiny_dataset`` (batch 8, lr 1e-3):
  the mean of the first and last 30 logged losses. The parts are random, so a falling loss shows
  that gradients reach the adapter and it fits, not that it learns identities.
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
from accelerate.state import AcceleratorState

from choi.pipelines.sd import make_model_folder
from choi.training.loop import TrainConfig, train
from choi.training.sd import SDImageTask, SDImageTrainConfig

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"fp32": {"mixed_precision": "no"}, "bf16": {"mixed_precision": "bf16"},
         "bf16+checkpointing": {"mixed_precision": "bf16", "gradient_checkpointing": True},
         "fp32 layout=inpaint": {"mixed_precision": "no", "layout": "inpaint"},
         "fp32 identity=dinov2": {"mixed_precision": "no", "identity_encoder": "DINO"}}  # fmt: skip
TASK_OPTIONS = ("layout", "identity_encoder")  # SDImageTrainConfig's; the rest are TrainConfig's


def _parts(root: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_samples import write_tiny_dataset
    from sd_components import write_dinov2, write_ip_adapter, write_sd_folder

    write_dinov2(root / "dinov2")
    (root / "data").mkdir()
    model = make_model_folder(
        root / "model", write_sd_folder(root / "sd"), write_ip_adapter(root / "ip"), resolution=32
    )
    return model, write_tiny_dataset(root / "data")


def _train(model: Path, data: Path, out: Path, steps: int, batch: int, lr: float, **options) -> float:
    AcceleratorState._reset_state()  # each path its own mixed precision
    shutil.rmtree(out, ignore_errors=True)
    task = {k: options.pop(k) for k in TASK_OPTIONS if k in options}
    if task.get("identity_encoder") == "DINO":
        task["identity_encoder"] = str(model.parent / "dinov2")
    cfg = SDImageTrainConfig(data=str(data), model=str(model), resolution=32, batch_size=batch, num_workers=0,
                             **task)  # fmt: skip
    train_cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=min(20, steps // 10 + 1),
                            checkpoint_every=10**9, log_every=1, **options)  # fmt: skip
    start = time.perf_counter()
    train(SDImageTask(cfg), train_cfg, out)
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
        for name, options in PATHS.items():
            short = _train(model, data, root / "run", 5, 2, 1e-4, **options)
            long = _train(model, data, root / "run", 45, 2, 1e-4, **options)
            results["step_ms"][name] = round((long - short) / 40 * 1000)
        _train(model, data, root / "learn", args.learn_steps, 8, 1e-3, mixed_precision="no")
        lines = [json.loads(line) for line in (root / "learn" / "log.jsonl").read_text().splitlines()]
        losses = [line["loss"] for line in lines if "loss" in line]
        results["learn"] = {"steps": args.learn_steps, "batch": 8, "lr": 1e-3,
                            "first30": round(float(np.mean(losses[:30])), 4),
                            "last30": round(float(np.mean(losses[-30:])), 4)}  # fmt: skip
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
