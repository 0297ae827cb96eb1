"""The training run: optimizer, warm-up, mixed precision, accumulation, stop and resume.

A training state file (torch.save of tensors and plain values only, read with
weights_only=True) holds the trained parameters, the optimizer's, scheduler's and loss scaler's
states, the step and the config. The run's randomness is a function of (seed, step), so no
generator state needs saving: resuming continues exactly the run that stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import sampling
from ..checkpoint import Models
from ..files import atomic_write
from .loop import (
    PRECISIONS,
    Progress,
    SampleStream,
    TrainConfig,
    _seed,
    diffusion_loss,
    gradient_checkpointing,
    trainable_parameters,
    warmup_factor,
)
from .lora import LoRAAdapters

STATE_FORMAT = "pbe-train-state"
# Config fields a resumed run must share with the state; others (steps, device, how often to
# save or preview) may change between the two halves.
RESUME_FIELDS = ("resolution", "batch_size", "grad_accum", "lr", "warmup_steps", "warmup_start",
                 "weight_decay", "seed", "uncond_p", "train", "lora_rank", "lora_alpha",
                 "lora_targets", "recipe")


class StateError(ValueError):
    """A training state that cannot resume this run; says why."""


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # one per optimizer step of this call
    skipped: list[str]  # why samples were skipped
    adapters: nn.Module | None = None  # the LoRA adapters, in LoRA mode (`lora.save_lora`)
    interrupted: bool = False  # stopped early (Ctrl-C or `request_stop`) after a whole step


class Trainer:
    """Trains `models` in place on `source` (a sequence of (picture, object mask or box))."""

    def __init__(self, models: Models, source: Sequence, config: TrainConfig):
        self.models, self.config = models, config
        self.device = torch.device(config.device)
        for model in (models.unet, models.vae, models.encoder):
            model.to(self.device)
        self.adapters = (
            LoRAAdapters(models.unet, config.lora_rank, config.lora_alpha, config.lora_targets)
            if config.lora_rank else None
        )
        self.parameters = trainable_parameters(models, config, self.adapters)
        if not self.parameters:
            raise ValueError("nothing to train: config.train is empty")
        self.optimizer = torch.optim.AdamW(
            self.parameters.values(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_factor(step, config)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.stream = SampleStream(source, config, models.encoder.config.image_size)
        self.alphas_cumprod = sampling.scaled_linear_schedule().alphas_cumprod.to(self.device)
        self.step = 0
        self._stop = False

    def request_stop(self) -> None:
        """Stop after the step in progress (what the first Ctrl-C does)."""
        self._stop = True

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=PRECISIONS[self.config.precision],
            enabled=self.config.precision != "fp32",
        )

    def train_step(self) -> float:
        """One optimizer step over `grad_accum` micro-batches; returns their mean loss."""
        config, total = self.config, 0.0
        for micro in range(config.grad_accum):
            first = (self.step * config.grad_accum + micro) * config.batch_size
            batch = {k: v.to(self.device) for k, v in self.stream.batch(first, config.batch_size).items()}
            generator = torch.Generator().manual_seed(_seed(config.seed, self.step, micro, 1))
            with self._autocast():
                loss = diffusion_loss(self.models, batch, generator, self.alphas_cumprod, config.uncond_p)
            self.scaler.scale(loss / config.grad_accum).backward()
            total += loss.item() / config.grad_accum
        if not math.isfinite(total):
            raise ValueError(
                f"the loss became {total} at step {self.step}; lower the learning rate or use fp32"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return total

    @contextlib.contextmanager
    def _ctrl_c_stops(self):
        """The first Ctrl-C asks to stop after the current step; a second one interrupts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(_signum, _frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def run(
        self, callback: Callable[[Progress], None] | None = None,
        every: Callable[[int], None] | None = None,
    ) -> TrainResult:
        """Train up to `config.steps` optimizer steps; `callback(progress)` and `every(step)`
        (previews, periodic saves) after each. Ctrl-C or `request_stop` ends it after a whole
        step, with `interrupted` set: save the state then, and resume from it later."""
        losses, started, first = [], time.perf_counter(), self.step
        for parameter in self.parameters.values():
            parameter.requires_grad_(True)
        self.models.unet.train(any(n.startswith(("unet.", "lora.")) for n in self.parameters))
        adapters = self.adapters.attached() if self.adapters is not None else contextlib.nullcontext()
        self._stop = False
        try:
            with self._ctrl_c_stops(), adapters, gradient_checkpointing(
                self.models.unet, self.config.checkpointing
            ):
                while self.step < self.config.steps and not self._stop:
                    losses.append(self.train_step())
                    if callback is not None:
                        rate = (self.step - first) / (time.perf_counter() - started)
                        callback(Progress(
                            self.step, self.config.steps, losses[-1], self.scheduler.get_last_lr()[0],
                            rate, (self.config.steps - self.step) / rate, len(self.stream.skipped),
                        ))
                    if every is not None:
                        every(self.step)
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            for parameter in self.parameters.values():
                parameter.requires_grad_(False)
            self.models.unet.eval()
        interrupted = self._stop and self.step < self.config.steps
        return TrainResult(self.step, losses, self.stream.skipped, self.adapters, interrupted)

    # -----------------------------------------------------------------------------------------
    # Training state

    def state(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "version": 1,
            "step": self.step,
            "config": dataclasses.asdict(self.config),
            "parameters": {name: p.detach().clone() for name, p in self.parameters.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def save_state(self, path: str | os.PathLike) -> Path:
        """Write the training state atomically (a crash mid-write keeps the previous file)."""
        state = self.state()
        return atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load_state(self, path: str | os.PathLike) -> None:
        """Continue from a saved state: the same base model, data and RESUME_FIELDS."""
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise StateError(f"{path}: no such training state") from None
        except Exception as error:  # noqa: BLE001 - any reader failure means not a state file
            raise StateError(f"{path}: not a training state ({type(error).__name__})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise StateError(f"{path}: not a training state written by `pbe_core train`")
        ours = dataclasses.asdict(self.config)
        differ = [f"{k} {state['config'].get(k)!r} (now {ours[k]!r})" for k in RESUME_FIELDS
                  if _plain(state["config"].get(k)) != _plain(ours[k])]
        if differ:
            raise StateError(
                f"{path}: saved with other settings: {'; '.join(differ)}. Resume with the "
                "settings it was saved with."
            )
        saved = state["parameters"]
        if list(saved) != list(self.parameters) or any(
            saved[n].shape != p.shape for n, p in self.parameters.items()
        ):
            raise StateError(f"{path}: its parameters do not fit this model (another base model?)")
        with torch.no_grad():
            for name, parameter in self.parameters.items():
                parameter.copy_(saved[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])


def _plain(value):
    """Tuples and lists compare equal (a state's config comes back with lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def train_steps(
    models: Models, source: Sequence, config: TrainConfig,
    callback: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train `models` in place on `source` (a sequence of (PIL picture, object mask or box))."""
    return Trainer(models, source, config).run(callback)
