"""`python -m pbe_core train`: fine-tune on your own pictures with the paper's recipe."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .data import FORMATS

PRECISIONS = ("fp32", "bf16", "fp16")


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default unless the help already says it, or there is none to show."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def add_train_parser(commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "train", help="fine-tune a model on your own pictures (full or LoRA)",
        description="Fine-tune Paint by Example with the paper's self-supervised recipe: each "
        "picture's object becomes the exemplar and is erased from the picture, which the model "
        "learns to restore. Ctrl-C stops after the current step and saves a state that --resume "
        "continues exactly.",
        formatter_class=_Defaults,
    )
    p.add_argument("--model", required=True, help="base weights: a .ckpt, .safetensors or diffusers folder")
    p.add_argument("--data", required=True,
                   help="a folder of pictures with STEM.mask.png (white = object), a COCO-style "
                   ".json, or an Open Images folder (bbox/ and images/)")
    p.add_argument("--data-format", choices=FORMATS, default="auto", help="the layout of --data")
    p.add_argument("--images", default=None, help="COCO: the pictures' folder (default: beside the JSON)")
    p.add_argument("--whole-masks", action="store_true",
                   help="masks layout: one object per mask file, not one per connected region")
    p.add_argument("--out", required=True,
                   help=".safetensors to write: the whole model in original key names, or with "
                   "--lora the LoRA file")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--resolution", type=int, default=512, help="training size (a multiple of 8)")
    p.add_argument("--batch-size", type=int, default=4, help="samples per micro-batch")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    p.add_argument("--warmup", type=int, default=10_000, help="linear warm-up steps, from 1e-6 x lr")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--uncond-p", type=float, default=0.2,
                   help="probability of training with the learned unconditional vector")
    p.add_argument("--lora", type=int, default=0, metavar="RANK",
                   help="train LoRA adapters of this rank instead of the whole UNet (0: full)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    p.add_argument("--lora-targets", default="attention",
                   help="comma-separated: attention, proj, ff, conv")
    p.add_argument("--seed", type=int, default=0, help="the same seed and data repeat a run exactly")
    p.add_argument("--resume", metavar="STATE", default=None, help="continue from a saved training state")
    p.add_argument("--state", default=None,
                   help="training state file, written on Ctrl-C, every --save-every steps and at "
                   "the end (default: OUT.state.pt, at the end only if --save-every)")
    p.add_argument("--save-every", type=int, default=0, help="save the training state every N steps")
    p.add_argument("--sample-every", type=int, default=0,
                   help="write sample edits of held-out pictures every N steps (0: never)")
    p.add_argument("--held-out", type=int, default=2, help="pictures kept out of training for samples")
    p.add_argument("--sample-steps", type=int, default=20, help="sampler steps of the sample edits")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (less memory)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--dtype", choices=PRECISIONS, default=None,
                   help="autocast precision; weights stay fp32 (default: bf16 on GPUs, fp32 on CPU)")
    p.add_argument("--save-dtype", choices=PRECISIONS, default="fp32", help="dtype of the written model")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=run_train)
    return p


def _progress(quiet: bool):
    def callback(progress) -> None:
        if quiet:
            return
        eta = time.strftime("%H:%M:%S", time.gmtime(progress.eta_s)) if progress.eta_s < 86400 * 30 else "?"
        sys.stderr.write(
            f"\rstep {progress.step}/{progress.steps} loss {progress.loss:.4f} lr {progress.lr:.2e} "
            f"{progress.steps_per_s:.2f} steps/s ETA {eta}"
            + (f" skipped {progress.skipped}" if progress.skipped else "")
        )
        if progress.step == progress.steps:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return callback


def run_train(args: argparse.Namespace) -> None:
    import torch

    from ..checkpoint import load_models, save_single_file, weights_of
    from ..cli import CliError, _resolve_model
    from ..options import OptionError, resolve_device
    from .data import read_dataset
    from .loop import ENCODER_PARTS, TRAINABLE, TrainConfig
    from .lora import save_lora
    from .preview import Previewer
    from .trainer import Trainer

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise CliError(f"--out: {out.name} must end in .safetensors")
    if not out.parent.is_dir():
        raise CliError(f"--out: the folder {out.parent} does not exist; create it first")
    try:
        device = resolve_device(args.device)
    except OptionError as error:
        raise CliError(f"--device {error.problem}") from None
    precision = args.dtype or ("fp32" if device.type == "cpu" else "bf16")
    data = read_dataset(args.data, args.data_format, args.images, split_regions=not args.whole_masks)
    held_out = min(args.held_out, len(data) // 4) if args.sample_every else 0
    train_data, held = data.split(held_out)
    print(f"data: {data.summary()}" + (f"; {held_out} held out for samples" if held_out else ""))

    config = TrainConfig(
        steps=args.steps, resolution=args.resolution, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, warmup_steps=args.warmup,
        weight_decay=args.weight_decay, seed=args.seed, precision=precision, uncond_p=args.uncond_p,
        train=TRAINABLE, lora_rank=args.lora, lora_alpha=args.lora_alpha,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
        checkpointing=args.checkpointing, device=str(device),
    )
    models = load_models(_resolve_model(args.model), dtype=torch.float32)
    trainer = Trainer(models, train_data, config)
    if args.resume:
        trainer.load_state(args.resume)
        print(f"resumed {args.resume} at step {trainer.step}")
    state_path = Path(args.state) if args.state else out.with_name(out.name + ".state.pt")
    previewer = Previewer(models, held, out.with_name(out.stem + ".samples"), args.sample_every,
                          args.resolution, args.sample_steps, device)

    def every(step: int) -> None:
        previewer(step)
        if args.save_every and step % args.save_every == 0:
            trainer.save_state(state_path)

    started = time.perf_counter()
    result = trainer.run(_progress(args.quiet), every)
    if result.skipped:
        print(f"\nskipped {len(result.skipped)} samples while training, e.g. {result.skipped[0]}")
    if result.interrupted:
        trainer.save_state(state_path)
        print(f"\nstopped at step {result.step}: saved {state_path}; continue with --resume {state_path}")
        raise KeyboardInterrupt
    if args.state or args.save_every:
        trainer.save_state(state_path)
    save_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.save_dtype]
    if result.adapters is not None:
        save_lora(result.adapters, models, out, ENCODER_PARTS)
        what = f"LoRA rank {args.lora} on {args.lora_targets}"
    else:
        save_single_file(weights_of(models), out, dtype=save_dtype)
        what = "full model"
    losses = result.losses
    trend = f", loss {losses[0]:.4f} -> {sum(losses[-10:]) / len(losses[-10:]):.4f} (last 10)" if losses else ""
    print(f"wrote {out} ({what}) after {result.step} steps in {time.perf_counter() - started:.0f}s{trend}"
          + (f"; samples in {previewer.folder}" if previewer.written else ""))
