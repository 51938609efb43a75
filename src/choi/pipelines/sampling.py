"""Sampling as plain functions: per-image generators, noise, scheduler, denoising loop.

They work with any diffusers scheduler (DPM-Solver, Euler, DDIM, ...): the loop scales the model
input (:meth:`~diffusers.SchedulerMixin.scale_model_input`) and starts from the scheduler's
``init_noise_sigma``, so a sigma-space scheduler gets what it expects.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import DPMSolverMultistepScheduler

from choi.errors import ChoiError
from choi.pipelines.request import MAX_SEED


def make_generators(
    num_images: int, seed: int | None = None, generator: torch.Generator | Sequence[torch.Generator] | None = None
) -> tuple[list[torch.Generator], list[int]]:
    """One CPU generator per image (image k depends on its own only) and the seeds to record.

    ``seed`` gives image k the seed ``seed + k`` (a random base when ``None``, recorded).
    """
    if generator is not None:
        generators = list(generator) if isinstance(generator, list | tuple) else [generator]
        if isinstance(generator, torch.Generator) and num_images > 1:
            raise ChoiError("pass one generator per image (a list), or a seed")
        if len(generators) != num_images:
            raise ChoiError(f"got {len(generators)} generators for {num_images} images")
        return generators, [g.initial_seed() for g in generators]
    base = secrets.randbits(31) if seed is None else int(seed)
    if not 0 <= base <= MAX_SEED - num_images:
        raise ChoiError(f"seed must be in [0, 2^63 - {num_images}], got {str(seed)[:30]}")
    seeds = [base + k for k in range(num_images)]
    return seeded_generators(seeds), seeds


def seeded_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def make_scheduler(config: Any) -> DPMSolverMultistepScheduler:
    """DPM-Solver++(2M) on a choi model's training noise schedule; x0 clipped to the data range [-1, 1]."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",  # start from pure noise (t = T-1): few-step sampling needs it
        thresholding=True,
        sample_max_value=1.0,
        lower_order_final=True,
        final_sigmas_type="zero",
    )


def get_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """(K, *shape) noise, sample k drawn from ``generators[k]`` alone on the CPU."""
    noise = [torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators]
    return torch.cat(noise).to(device=device, dtype=dtype)


@torch.no_grad()
def denoise(
    model: Any,
    scheduler: Any,
    noise: torch.Tensor,
    cond: Any,
    uncond: Any | None,
    steps: int,
    guidance_scale: float,
    callback: Callable[[int, int], None] | None = None,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Run ``scheduler`` from unit-variance ``noise``; with ``uncond``, classifier-free guidance in one batched pass.

    ``model.denoise(x, t, encoded)`` predicts what the scheduler's ``prediction_type`` says;
    ``cond``/``uncond`` are encoded conditions with a ``cat``. ``callback(step, total)`` after every
    step. With ``init`` (clean samples in the model's range), img2img: ``init`` is noised to the level
    where the last ``strength`` (0 < s <= 1) of the schedule begins and only those steps run (at least one).
    """
    scheduler.set_timesteps(steps, device=noise.device)
    timesteps = scheduler.timesteps
    if init is None:
        x = noise * scheduler.init_noise_sigma
    else:
        start = steps - max(1, round(steps * strength))
        timesteps = timesteps[start:]
        scheduler.set_begin_index(start)
        x = scheduler.add_noise(init.to(noise.dtype), noise, timesteps[:1])
    both = cond.cat(uncond) if uncond is not None else cond
    for i, t in enumerate(timesteps):
        inp = torch.cat([x, x]) if uncond is not None else x
        inp = scheduler.scale_model_input(inp, t)
        pred = model.denoise(inp, t.expand(inp.shape[0]), both).float()
        if uncond is not None:
            c, u = pred.chunk(2)
            pred = u + guidance_scale * (c - u)
        x = scheduler.step(pred, t, x).prev_sample
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x.clamp(-1, 1)
