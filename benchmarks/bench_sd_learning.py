"""Does choi-sd's stage-2 training learn identities? Colour-blob identities on tiny random SD parts (CPU).

Usage:
    python benchmarks/bench_sd_learning.py [--steps 400] [--lr 3e-3] [--batch 8] [--threads 1]
        [--out benchmarks/results/sd-learning]

tests/sd_learning.py does the work: 8 samples whose person and object references are solid colour
blobs and whose targets paint each role's region in its reference's colour (tests/fake_samples.py
``blob_samples``), tiny random SD parts with a calibrated VAE (narrow posterior, latents scaled to
unit size), the real task and loop (fp32, no validation). Recorded, for the untrained adapter and
the trained one:

- the loss: mean of the first and last 30 steps and their ratio;
- the training loss with each role's reference swapped for another colour's (same noise and
  timesteps): how much the model uses each reference;
- generation through ``CHOIPipeline.from_pretrained(RUN/model)`` with each sample's own layout (10
  steps, no CFG, seed 0): with the sample's references, with the person's swapped and with the
  object's swapped; the mean absolute change inside each role's region, and the cosine between how
  the swapped region's mean colour moved and how its target's moved.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="folder for results.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    from sd_learning import learning_run, loss_drop, reference_loss_gap, swap_effects, untrained_model, write_parts

    results = {"steps": args.steps, "lr": args.lr, "batch": args.batch, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data = write_parts(root)
        start = untrained_model(model, data, root / "untrained")
        results["untrained"] = {"loss_with": reference_loss_gap(start, data), "generation": swap_effects(start)}
        t0 = time.perf_counter()
        final, losses = learning_run(model, data, root / "run", args.steps, args.lr, args.batch)
        results["train_s"] = round(time.perf_counter() - t0, 1)
        n = min(30, len(losses) // 4)
        results["loss"] = {"first": round(sum(losses[:n]) / n, 4), "last": round(sum(losses[-n:]) / n, 4),
                           "n": n, "drop": round(loss_drop(losses, n), 2)}  # fmt: skip
        results["trained"] = {"loss_with": reference_loss_gap(final, data), "generation": swap_effects(final)}
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
