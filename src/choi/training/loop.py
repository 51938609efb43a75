"""The one training loop of choi, shared by the evaluators, the mask model and the image model.

What differs between models lives in a :class:`Task` (data, loss, optional validation); the loop
owns everything else: accelerate (CPU, one GPU or several without code changes; bf16 on GPU),
AdamW with warm-up, EMA, gradient clipping and accumulation, gradient checkpointing, a JSONL loss
log, periodic validation, and checkpoints that resume exactly (model + EMA as safetensors,
optimiser/step/RNG of every process in a separate training-state file).

The model a task builds is the ONE module that is wrapped (DDP, DeepSpeed and FSDP each take one)
and saved: only its parameters that require grad enter the optimiser and the EMA. Frozen parts a
task needs besides (an SD UNet, VAE, encoders) live outside it, in the task, and the task's
optional ``place`` puts them on the device in the low-precision dtype; the trainables stay fp32
under autocast. Only the main process writes.

Run folder layout::

    RUN/config.json          resolved TrainConfig + task config + choi version
    RUN/log.jsonl            one line per logged step
    RUN/checkpoint/          latest checkpoint: model/, ema/, training_state.pt
    RUN/model/               final EMA weights (save_pretrained), what inference loads
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from choi import __version__
from choi.errors import ChoiError
from choi.io import check_output_folder
from choi.launch import cpu_processes

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100  # short warm-up: AdamW with GroupNorm nets is stable after a few hundred steps
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # ~1000-step horizon, matched to the few-thousand-step CPU runs
    log_every: int = 50
    checkpoint_every: int = 500
    validate_every: int = 0  # 0: only at the end
    seed: int = 0
    mixed_precision: str = "auto"  # "auto": bf16 on CUDA, fp32 on CPU; or "no" / "bf16" / "fp16"
    grad_accum: int = 1  # micro-batches per optimiser step: effective batch = batch_size x grad_accum x processes
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory for more time


class Task(Protocol):
    """What the loop needs from a model-specific training recipe."""

    name: str

    def build_model(self) -> torch.nn.Module: ...

    def batches(self, epoch: int) -> Iterable[dict[str, torch.Tensor]]:
        """Deterministic batches of one pass over the data (the loop re-calls with epoch+1)."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss and named values to log."""

    def validate(self, model: torch.nn.Module, out_dir: Path, step: int) -> dict[str, float]:
        """Optional: metrics (and files such as grids in ``out_dir``) for the current EMA model."""

    def config(self) -> dict[str, Any]: ...

    # Optional: ``place(model, device, dtype)`` puts the frozen parts the task keeps outside ``model`` on
    # ``device`` in ``dtype`` (the mixed-precision dtype; fp32 without it) and connects them to ``model``.


WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # frozen parts' dtype per mixed precision


def _lr_lambda(cfg: TrainConfig):
    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine to zero

    return fn


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _atomic_replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


class _Stream:
    """Infinite iterator over task batches that knows its position (epoch, batch) for exact resume."""

    def __init__(self, task: Task, epoch: int = 0, index: int = 0):
        self.task, self.epoch, self.index = task, epoch, index
        self._it = self._start()

    def _start(self) -> Iterator[dict[str, torch.Tensor]]:
        it = iter(self.task.batches(self.epoch))
        for _ in range(self.index):  # replay the consumed part of the epoch: same order, same data
            next(it)
        return it

    def __next__(self) -> dict[str, torch.Tensor]:
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.index = self.epoch + 1, 0
            self._it = iter(self.task.batches(self.epoch))
            try:
                batch = next(self._it)
            except StopIteration:
                raise ChoiError(f"task '{self.task.name}' produced no training batches") from None
        self.index += 1
        return batch


def train(task: Task, cfg: TrainConfig, run_dir: str | os.PathLike, resume: bool = False) -> Path:
    """Train ``task``'s model; returns the folder with the final EMA weights (``RUN/model``)."""
    if cfg.grad_accum < 1:
        raise ChoiError(f"gradient accumulation must be at least 1 micro-batch, got {cfg.grad_accum}")
    run = check_output_folder(run_dir)
    ckpt = run / "checkpoint"
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() else "no"
    # without cpu=True on a machine without CUDA, the processes would be unrelated runs racing on one folder
    accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum, cpu=cpu_processes())
    # every process checks before any writes: a fast rank 0 must not make the others refuse the run
    if run.exists() and any(run.iterdir()) and not resume:
        raise ChoiError(f"run folder {run} is not empty; pass --resume to continue it or choose a new --out")
    if resume and not (ckpt / "training_state.pt").exists() and run.exists() and any(run.iterdir()):
        raise ChoiError(f"cannot resume: {run} has no checkpoint")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    model = task.build_model()  # the same initial weights on every process
    if accelerator.num_processes > 1:
        torch.manual_seed(cfg.seed + accelerator.process_index)  # but each its own noise and dropout draws
    if (ckpt / "model").exists() and resume:
        model.load_state_dict(type(model).from_pretrained(ckpt / "model").state_dict())
    if hasattr(task, "place"):
        task.place(model, accelerator.device, WEIGHT_DTYPES.get(accelerator.mixed_precision, torch.float32))
    if cfg.gradient_checkpointing:
        if not hasattr(model, "enable_gradient_checkpointing"):
            raise ChoiError(f"the {task.name} model does not support gradient checkpointing")
        model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ChoiError(f"the {task.name} model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    ema = EMAModel(params, decay=cfg.ema_decay, model_cls=type(model), model_config=model.config)

    step, epoch, index = 0, 0, 0
    if resume and (ckpt / "training_state.pt").exists():
        state = torch.load(ckpt / "training_state.pt", weights_only=False, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        _set_rng_state(state, accelerator.process_index, accelerator.num_processes)
        step, epoch, index = state["step"], state["epoch"], state["index"]
        log.info("resumed %s at step %d", task.name, step)

    if accelerator.is_main_process:
        (run / "config.json").write_text(
            json.dumps({"train": asdict(cfg), "task": task.config(), "choi_version": __version__}, indent=2)
        )
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    stream = _Stream(task, epoch, index)
    quiet = not sys.stderr.isatty() or not accelerator.is_main_process
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {task.name}", disable=quiet)

    def save_checkpoint() -> None:
        rng = _rng_state()  # every process's: each draws its own noise
        if accelerator.num_processes > 1:
            rng = gather_object([rng])
        if not accelerator.is_main_process:
            return
        tmp = run / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        net = accelerator.unwrap_model(model)
        net.save_pretrained(tmp / "model")
        with _ema_weights(ema, params):
            net.save_pretrained(tmp / "ema")
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict(),
            "rng": rng,
            "step": step,
            "epoch": stream.epoch,
            "index": stream.index,
        }
        torch.save(state, tmp / "training_state.pt")
        _atomic_replace_dir(tmp, ckpt)

    def validate() -> None:
        if not hasattr(task, "validate") or not accelerator.is_main_process:
            return
        net = accelerator.unwrap_model(model)
        with _ema_weights(ema, params):
            net.eval()
            with torch.no_grad():
                metrics = task.validate(net, run, step)
            net.train()
        if metrics:
            _log_line(run, {"step": step, **{f"val/{k}": v for k, v in metrics.items()}})
            log.info("%s step %d validation %s", task.name, step, metrics)

    model.train()
    while step < cfg.steps:
        losses = []
        for _ in range(cfg.grad_accum):  # the last micro-batch synchronises the gradients and steps
            batch = _to_device(next(stream), accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, values = task.loss(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.grad_clip > 0:
                    accelerator.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        scheduler.step()
        ema.step(params)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean_loss = float(accelerator.reduce(torch.stack(losses).mean(), "mean"))  # over micro-batches and ranks
            if accelerator.is_main_process:
                _log_line(run, {"step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0], **values})
            bar.set_postfix(loss=f"{mean_loss:.4f}")
        if cfg.validate_every and step % cfg.validate_every == 0 and step < cfg.steps:
            validate()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint()
    bar.close()
    validate()

    final = run / "model"
    if accelerator.is_main_process:
        net = accelerator.unwrap_model(model)
        ema.copy_to(params)
        tmp = run / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        net.save_pretrained(tmp)
        _atomic_replace_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final


@contextmanager
def _ema_weights(ema: EMAModel, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """The EMA weights in ``params`` for the duration, the trained ones back afterwards."""
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A task's DataLoader seed source for ``epoch``. Without one, a DataLoader draws its worker seed from the
    global RNG when an epoch starts, and the draw a resumed run makes when it restarts the epoch would shift
    every later noise sample: a run resumed mid-epoch would not be exact."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any], rank: int, processes: int) -> None:
    """This process's RNG as saved; a run resumed on a different number of processes keeps its seeds."""
    if "torch_rng" in state:  # checkpoints before per-process RNG: one CPU state
        torch.set_rng_state(state["torch_rng"])
        return
    rng = state["rng"]
    if isinstance(rng, list):
        if len(rng) != processes:
            log.warning("checkpoint from %d processes resumed on %d: noise draws will differ", len(rng), processes)
            return
        rng = rng[rank]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def _log_line(run: Path, values: dict[str, Any]) -> None:
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps(values) + "\n")


def train_recipe(
    task: Task,
    out: str | os.PathLike,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    resume: bool = False,
    validate_every: int = 0,
    **options: Any,
) -> Path:
    """:func:`train` with the schedule every diffusion recipe uses: warm-up, checkpoint and log
    cadence scaled to ``steps``. ``options``: further :class:`TrainConfig` fields. Returns ``out/model``."""
    if steps <= 0 or batch_size <= 0 or lr <= 0:
        raise ChoiError("--steps, --batch-size and --lr must be positive")
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        warmup_steps=min(200, max(1, steps // 10)),
        checkpoint_every=max(100, steps // 20),
        log_every=max(1, min(50, steps // 100)),
        validate_every=validate_every,
        **options,
    )
    return train(task, cfg, out, resume=resume)
