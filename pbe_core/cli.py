"""`python -m pbe_core edit | convert | download | demo | evaluate | train`.

Every argument and the output path are checked before anything heavy is imported or loaded;
a user mistake is one line on stderr and exit status 2 (130 for Ctrl-C, 143 for SIGTERM), and
no partial or temporary file is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from . import download as downloads
from . import evaluate_cli
from .options import SAMPLERS, EditOptions, OptionError
from .train.cli import add_train_parser

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
AUTO_DTYPE = "auto"  # fp16 on GPUs; on the CPU bf16 where native (AMX, AVX512-BF16), else fp32
OUTPUT_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")
CHECKPOINT_SUFFIXES = {".safetensors": "single", ".ckpt": "ckpt", ".pt": "ckpt", ".pth": "ckpt"}


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that temporary files are cleaned up."""


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def default_model_path() -> Path:
    """The first official layout present in the default model folder, else the single file."""
    for layout in ("single", "diffusers"):
        candidate = downloads.official_target(layout)
        if candidate.exists():
            return candidate
    return downloads.official_target("single")


def _torch_dtype(name: str | None):
    import torch

    return getattr(torch, DTYPES[name]) if name and name != AUTO_DTYPE else None


def _open_image(path: str, what: str):
    from .images import open_image

    return open_image(path, f"--{what}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _output_paths(out: Path, count: int, inputs: dict[str, str | None]) -> list[Path]:
    if out.is_dir():
        raise CliError(f"--out: {out} is a folder; give a file name such as {out / 'result.png'}")
    if not out.parent.is_dir():
        raise CliError(f"--out: the folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise CliError(f"--out: cannot write in the folder {out.parent} (permission denied)")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CliError(f"--out: {out.name} needs an image extension: .png or .webp (lossless), or .jpg")
    paths = [out] if count == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]
    for path in paths:
        if path.is_dir():
            raise CliError(f"--out: {path} (an output of the batch) is a folder; pick another --out")
        for flag, given in inputs.items():
            if given and _same_file(path, Path(given)):
                raise CliError(f"--out: {path} is the {flag} file; it would be overwritten. "
                               "Write the result to another file")
    return paths


def _resolve_model(path: str | None) -> Path:
    model = Path(path).expanduser() if path else default_model_path()
    if model.exists():
        return model
    if path is not None:
        raise CliError(f"--model: no such file or folder: {model}. Pass a .ckpt, .safetensors or "
                       "diffusers folder of Paint by Example")
    message = (f"no model at {model}. Fetch the official weights with `python -m pbe_core "
               "download`, or pass --model PATH (a .ckpt, .safetensors or diffusers folder)")
    if sys.stdin.isatty():
        try:
            answer = input(f"{message}.\nDownload now (about 5 GB)? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() == "y":
            return downloads.download_official(layout="single", progress=downloads.TextProgress)
    raise CliError(message)


def _progress_bar(total_label: str):
    started = time.perf_counter()

    def callback(step: int, total: int, _x0) -> None:
        done = step + 1
        filled = round(30 * done / total)
        elapsed = time.perf_counter() - started
        sys.stderr.write(f"\r{total_label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {elapsed:.1f}s")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return callback


def _edit_options(args: argparse.Namespace) -> EditOptions:
    fields = EditOptions.__dataclass_fields__
    try:
        return EditOptions(**{name: getattr(args, name) for name in fields if hasattr(args, name)}).validate()
    except OptionError as error:
        raise CliError(f"{_flag(error.option)} {error.problem}") from None


def _device_and_dtype(args: argparse.Namespace):
    import torch

    from .options import resolve_device
    from .pipeline import default_dtype

    try:
        device = resolve_device(args.device)
    except OptionError as error:
        raise CliError(f"--device {error.problem}") from None
    dtype = _torch_dtype(args.dtype) or default_dtype(device)
    if device.type == "cpu" and dtype == torch.float16:
        raise CliError("--dtype fp16 does not run on the CPU; use --dtype bf16 or fp32")
    return device, dtype


def edit(args: argparse.Namespace) -> None:
    """Check everything, read the inputs, then load the model and edit."""
    from . import prepare
    from .images import save_image

    options = _edit_options(args)
    inputs = {"--image": args.image, "--mask": args.mask, "--exemplar": args.exemplar,
              "--exemplar-mask": args.exemplar_mask, "--negative-exemplar": args.negative_exemplar}
    ranked = options.candidates > 1
    outputs = _output_paths(Path(args.out), options.candidates if ranked and args.keep_all else options.batch_size, inputs)
    device, dtype = _device_and_dtype(args)
    image = _open_image(args.image, "image")
    mask = _open_image(args.mask, "mask")
    exemplar = _open_image(args.exemplar, "exemplar")
    exemplar_mask = _open_image(args.exemplar_mask, "exemplar-mask") if args.exemplar_mask else None
    negative = _open_image(args.negative_exemplar, "negative-exemplar") if args.negative_exemplar else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # the mask must fit the image: known now, not after the model loads
            prepare.fit_mask_to_image(prepare.mask_to_tensor(mask, "--mask"), (image.height, image.width), "--mask")
        except ValueError as error:
            raise CliError(str(error)) from None
    model = _resolve_model(args.model)

    from .pipeline import PaintByExample

    started = time.perf_counter()
    pipe = PaintByExample.from_pretrained(
        model, device=device, dtype=dtype, lora=args.lora, lora_strength=args.lora_strength, one_shot=True
    )
    loaded = time.perf_counter() - started
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe.run(
            image, mask, exemplar, **options.as_kwargs(), exemplar_mask=exemplar_mask,
            negative_exemplar=negative, callback=None if args.quiet else _progress_bar("sampling"),
        )
        for pixels, path in zip(result.images[: len(outputs)], outputs, strict=True):  # ranked: best first
            save_image(pixels, path, source=image, name="--out")
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if ranked and result.scores is not None:
        for rank, (seed, score) in enumerate(zip(result.seeds, result.scores.tolist(), strict=True)):
            where = f" -> {outputs[rank]}" if rank < len(outputs) else ""
            print(f"candidate {rank + 1}: seed {seed}, region CLIP score {score:.2f}{where}")
    total = time.perf_counter() - started
    print(
        f"wrote {', '.join(map(str, outputs))}: {image.width}x{image.height}, {options.sampler} "
        f"{options.steps} steps, guidance {options.guidance:g}, seed {options.seed}, {pipe.device.type} "
        f"{str(pipe.dtype).removeprefix('torch.')}, load {loaded:.1f}s, total {total:.1f}s"
    )


def _destination_layout(destination: Path, layout: str | None, overwrite: bool) -> str:
    suffix = destination.suffix.lower()
    if layout is None:
        if suffix in CHECKPOINT_SUFFIXES:
            layout = CHECKPOINT_SUFFIXES[suffix]
        elif suffix == "" or destination.is_dir():
            layout = "diffusers"
        else:
            raise CliError(
                f"destination {destination.name}: unknown extension {suffix}; write .safetensors "
                "(single file), .ckpt, or a folder name without an extension (diffusers), or pass --layout"
            )
    if destination.is_dir() and layout != "diffusers":
        raise CliError(f"destination {destination} is a folder; name the file to write, "
                       f"e.g. {destination / 'paint-by-example.safetensors'}")
    if destination.is_file() and layout == "diffusers":
        raise CliError(f"destination {destination} is a file; a diffusers model is a folder: "
                       "name a new folder, or pass a .safetensors or .ckpt file name")
    if destination.is_dir() and any(destination.iterdir()) and not (
        (destination / "unet").is_dir() or (destination / "model_index.json").is_file()
    ):
        raise CliError(f"destination {destination} is a folder holding other files; "
                       "name a new folder for the diffusers model")
    if destination.exists() and not overwrite:
        raise CliError(f"destination {destination} exists; pass --overwrite to replace it")
    return layout


def convert(args: argparse.Namespace) -> None:
    destination = Path(args.destination).expanduser()
    layout = _destination_layout(destination, args.layout, args.overwrite)
    if not Path(args.source).expanduser().exists():
        raise CliError(f"source: no such file or folder: {args.source}")

    from .checkpoint import read_weights, save_diffusers, save_original_ckpt, save_single_file

    weights = read_weights(args.source)
    writer = {"single": save_single_file, "ckpt": save_original_ckpt, "diffusers": save_diffusers}[layout]
    writer(weights, destination, dtype=_torch_dtype(args.dtype))
    print(f"wrote {destination} ({layout}, {args.dtype or 'dtype kept'}) from {args.source} ({weights.layout})")


def fetch(args: argparse.Namespace) -> None:
    if args.dir is not None and Path(args.dir).expanduser().exists() and not Path(args.dir).expanduser().is_dir():
        raise CliError(f"--dir: {args.dir} is a file; give the folder to download into")
    path = downloads.download_official(
        args.dir, layout=args.layout, progress=None if args.quiet else downloads.TextProgress
    )
    print(f"weights ready at {path}")


def demo(args: argparse.Namespace) -> None:
    """Exemplar-driven edits by the toy model the project trains (trained on first use, cached)."""
    from .demo import run_demo

    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--out: {folder} is a file; give a folder for the demo's files")
    if args.steps < 1:
        raise CliError(f"--steps must be at least 1; got {args.steps}")
    if not 1 <= args.cases <= 16:
        raise CliError(f"--cases must lie in 1..16; got {args.cases}")
    folder.mkdir(parents=True, exist_ok=True)
    for line in run_demo(folder, cases=args.cases, steps=args.steps, guidance=args.guidance):
        print(f"demo: {line}")
    print(f"demo: wrote {folder}/scene.png, mask.png, exemplar.png, result.png and overview.png "
          "(rows: scene with the mask's box, exemplar, result)")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, off, required)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = EditOptions()
    parser = _Parser(prog="python -m pbe_core", description="Paint by Example, without a host.")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help, description=help, formatter_class=_HelpWithDefaults
        )

    p = command("edit", "place an exemplar's object into the masked region of an image")
    p.add_argument("--model", help=f"a .ckpt, .safetensors or diffusers folder (default: {default_model_path()})")
    p.add_argument("--image", required=True, help="the scene to edit (EXIF orientation applied)")
    p.add_argument("--mask", required=True,
                   help="white = region to replace; a mask with transparency: opaque = replace")
    p.add_argument("--exemplar", required=True,
                   help="a photo of the object to place; a transparent background cuts the object out")
    p.add_argument("--out", required=True,
                   help="output .png/.webp (lossless) or .jpg; a batch writes NAME-0.png, NAME-1.png, ...")
    p.add_argument("--steps", type=int, default=defaults.steps, help="sampling steps (1 to 999)")
    p.add_argument("--guidance", type=float, default=defaults.guidance,
                   help="classifier-free guidance scale (1 = none; higher follows the exemplar more)")
    p.add_argument("--sampler", choices=SAMPLERS, default=defaults.sampler, help="sampler")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="0 to 2^64-1; image i of a batch uses seed + i")
    p.add_argument("--eta", type=float, default=defaults.eta, help="DDIM's eta (ddim only)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per run")
    p.add_argument("--candidates", type=int, default=defaults.candidates, metavar="N",
                   help="try seeds seed .. seed+N-1 and keep the best by region CLIP score")
    p.add_argument("--keep-all", action="store_true",
                   help="with --candidates: write all, ranked, as NAME-0.png (best), NAME-1.png, ...")
    p.add_argument("--region", choices=("auto", "full"), default=defaults.region,
                   help="auto: crop around the mask and stitch back; full: the whole image at its size")
    p.add_argument("--context", type=float, default=defaults.context,
                   help="auto: crop = mask box x this (at least 1)")
    p.add_argument("--resolution", type=int, default=defaults.resolution,
                   help="auto: the crop's longer side for the model (at least 64, rounded to a multiple of 8)")
    p.add_argument("--grow", type=int, default=defaults.grow,
                   help="grow (or, negative, shrink) the mask, in pixels")
    p.add_argument("--feather", type=int, default=defaults.feather,
                   help="blend radius in pixels at the mask's edge")
    p.add_argument("--colour-match", type=float, default=defaults.colour_match, metavar="STRENGTH",
                   help="0..1: match the edit's colours to its surroundings (0: off)")
    p.add_argument("--exemplar-mode", choices=("squash", "crop", "pad"), default=None,
                   help="squash (the reference; the default, or crop with --compat diffusers), crop (diffusers) or pad")
    p.add_argument("--exemplar-mask", help="white = the object in the exemplar; the rest is greyed")
    p.add_argument("--negative-exemplar", help="an image whose content to steer away from")
    p.add_argument("--negative-weight", type=float, default=defaults.negative_weight,
                   help="1 replaces the learned unconditional vector with the negative exemplar")
    p.add_argument("--compat", choices=("diffusers",), default=None,
                   help="reproduce diffusers' PaintByExamplePipeline numerically")
    p.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: the best available)")
    p.add_argument("--dtype", choices=(AUTO_DTYPE, *DTYPES), default=AUTO_DTYPE,
                   help="auto (default): fp16 on GPUs; on the CPU bf16 where native (AMX, AVX512-BF16), else fp32")
    p.add_argument("--lora", default=None, help="a LoRA file from `train --lora`, applied on top of --model")
    p.add_argument("--lora-strength", type=float, default=1.0, help="scale of the LoRA's change (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=edit)

    p = command("convert", "convert weights between layouts and dtypes")
    p.add_argument("source", help="a .ckpt, .safetensors or diffusers folder")
    p.add_argument("destination", help=".safetensors (single file), .ckpt, or a folder name (diffusers)")
    p.add_argument("--layout", choices=("single", "ckpt", "diffusers"), default=None,
                   help="default: from the destination's extension")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: the source's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.set_defaults(run=convert)

    p = command("download", "fetch the official weights (resumable, checksummed)")
    p.add_argument("--layout", choices=("single", "diffusers"), default="single", help="which files")
    p.add_argument("--dir", default=None, help=f"folder to put them in (default: {downloads.default_model_dir()})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=fetch)

    add_train_parser(commands)

    p = command("demo", "edits by a toy model this project trains here (no download; minutes the first time)")
    p.add_argument("--out", default="pbe-demo", help="folder for the inputs, results and overview")
    p.add_argument("--cases", type=int, default=4, help="held-out toy scenes to edit")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.set_defaults(run=demo)

    evaluate_cli.add_parser(commands)
    return parser


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _terminate(signum, _frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (0, 2 for a user mistake, 130 / 143 when stopped)."""
    previous = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help, or a usage error already printed as one line
            return int(done.code or 0)
        args.run(args)
    except (CliError, ValueError, downloads.DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        detail = str(error) if isinstance(error, MemoryError) and str(error) else "out of memory"
        print(f"error: {detail}" + ("" if "; use" in detail else
              ": use --region auto, a lower --resolution, --batch-size 1 or --dtype bf16/fp16"), file=sys.stderr)
        return 2
    except OSError as error:  # a file that cannot be read or written, named by the system
        print(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
