"""`python -m pbe_core edit | convert | download | demo`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from . import download as downloads
from .checkpoint import CheckpointError

SAMPLERS = ("plms", "ddim", "euler", "euler_a", "dpmpp_2m")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def default_model_path() -> Path:
    """The first official layout present in the default model folder, else the single file."""
    for layout in ("single", "diffusers"):
        candidate = downloads.official_target(layout)
        if candidate.exists():
            return candidate
    return downloads.official_target("single")


def _torch_dtype(name: str | None):
    import torch

    return getattr(torch, DTYPES[name]) if name else None


def _open_image(path: str, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            return picture
    except FileNotFoundError:
        raise CliError(f"--{what}: no such file: {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise CliError(f"--{what}: {path} is not an image PIL can read ({error})") from None


def _output_paths(out: Path, count: int) -> list[Path]:
    if not out.parent.is_dir():
        raise CliError(f"--out: the folder {out.parent} does not exist; create it first")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise CliError(f"--out: {out.name} needs an image extension (.png, .jpg, .webp)")
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{index}{out.suffix}") for index in range(count)]


def _save_atomically(picture, path: Path) -> None:
    """Never leave a half-written image at `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=path.suffix)
    os.close(handle)
    try:
        picture.save(temporary, format=None if path.suffix.lower() != ".jpg" else "JPEG")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _resolve_model(path: str | None) -> Path:
    model = Path(path).expanduser() if path else default_model_path()
    if model.exists():
        return model
    message = f"no model at {model}."
    if path is None:
        message += " Fetch the official weights with `python -m pbe_core download`"
        if sys.stdin.isatty() and input(f"{message}\nDownload now (about 5 GB)? [y/N] ").strip().lower() == "y":
            return downloads.download_official(layout="single", progress=downloads.TextProgress)
    raise CliError(message + " or pass --model PATH (a .ckpt, .safetensors or diffusers folder).")


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


def edit(args: argparse.Namespace) -> None:
    from .pipeline import PaintByExample
    from .prepare import to_pil

    image = _open_image(args.image, "image")
    mask = _open_image(args.mask, "mask")
    exemplar = _open_image(args.exemplar, "exemplar")
    exemplar_mask = _open_image(args.exemplar_mask, "exemplar-mask") if args.exemplar_mask else None
    negative = _open_image(args.negative_exemplar, "negative-exemplar") if args.negative_exemplar else None
    ranked = args.candidates > 1
    outputs = _output_paths(Path(args.out), args.candidates if ranked and args.keep_all else args.batch_size)
    model = _resolve_model(args.model)

    started = time.perf_counter()
    pipe = PaintByExample.from_pretrained(model, device=args.device, dtype=_torch_dtype(args.dtype))
    loaded = time.perf_counter() - started
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe.run(
            image, mask, exemplar, candidates=args.candidates,
            steps=args.steps, guidance=args.guidance, sampler=args.sampler, seed=args.seed,
            eta=args.eta, batch_size=args.batch_size, region=args.region, context=args.context,
            resolution=args.resolution, grow=args.grow, feather=args.feather,
            colour_match=args.colour_match, exemplar_mode=args.exemplar_mode, exemplar_mask=exemplar_mask,
            negative_exemplar=negative, negative_weight=args.negative_weight, compat=args.compat,
            callback=None if args.quiet else _progress_bar("sampling"),
        )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    pictures = result.images[: len(outputs)]  # ranked: best first
    for picture, path in zip(pictures, outputs, strict=True):
        _save_atomically(to_pil(picture), path)
    if ranked and result.scores is not None:
        for rank, (seed, score) in enumerate(zip(result.seeds, result.scores.tolist(), strict=True)):
            where = f" -> {outputs[rank]}" if rank < len(outputs) else ""
            print(f"candidate {rank + 1}: seed {seed}, region CLIP score {score:.2f}{where}")
    total = time.perf_counter() - started
    print(
        f"wrote {', '.join(map(str, outputs))}: {image.width}x{image.height}, {args.sampler} "
        f"{args.steps} steps, guidance {args.guidance}, seed {args.seed}, {pipe.device.type} "
        f"{str(pipe.dtype).removeprefix('torch.')}, load {loaded:.1f}s, total {total:.1f}s"
    )


def convert(args: argparse.Namespace) -> None:
    from .checkpoint import read_weights, save_diffusers, save_original_ckpt, save_single_file

    destination = Path(args.destination)
    if destination.exists() and not args.overwrite:
        raise CliError(f"{destination} exists; pass --overwrite to replace it")
    weights = read_weights(args.source)
    dtype = _torch_dtype(args.dtype)
    layout = args.layout or (
        "ckpt" if destination.suffix in (".ckpt", ".pt", ".pth")
        else "single" if destination.suffix == ".safetensors" else "diffusers"
    )
    writer = {"single": save_single_file, "ckpt": save_original_ckpt, "diffusers": save_diffusers}[layout]
    writer(weights, destination, dtype=dtype)
    print(f"wrote {destination} ({layout}, {args.dtype or 'dtype kept'}) from {args.source} ({weights.layout})")


def fetch(args: argparse.Namespace) -> None:
    path = downloads.download_official(
        args.dir, layout=args.layout, progress=None if args.quiet else downloads.TextProgress
    )
    print(f"weights ready at {path}")


def demo(args: argparse.Namespace) -> None:
    """A whole edit with a tiny random-weight model: proves the install, needs no download."""
    import numpy as np
    from PIL import Image

    from .pipeline import PaintByExample
    from .testing import tiny_weights, write_layout

    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    model = write_layout(tiny_weights(seed=0), "safetensors", folder)
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8))
    mask = Image.new("L", scene.size, 0)
    mask.paste(255, (96, 64, 160, 128))
    exemplar = Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))
    for name, picture in (("scene.png", scene), ("mask.png", mask), ("exemplar.png", exemplar)):
        picture.save(folder / name)
    pipe = PaintByExample.from_pretrained(model, device="cpu")
    [result] = pipe.edit(scene, mask, exemplar, steps=args.steps, resolution=128, seed=0,
                         callback=_progress_bar("sampling"))
    _save_atomically(result, folder / "result.png")
    changed = np.any(np.asarray(result) != np.asarray(scene), axis=-1)
    ys, xs = np.nonzero(changed)
    print(
        f"demo: edited {folder / 'scene.png'} with a tiny random model -> {folder / 'result.png'}; "
        f"changed pixels lie in x {xs.min()}..{xs.max()}, y {ys.min()}..{ys.max()} "
        f"(mask 96..159 x 64..127, plus feather)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pbe_core", description="Paint by Example, without a host.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("edit", help="place an exemplar's object into the masked region of an image")
    p.add_argument("--model", help=f"a .ckpt, .safetensors or diffusers folder (default: {default_model_path()})")
    p.add_argument("--image", required=True, help="the scene to edit")
    p.add_argument("--mask", required=True, help="white = region to replace")
    p.add_argument("--exemplar", required=True, help="a photo of the object to place")
    p.add_argument("--out", required=True, help="output image; a batch writes NAME-0.png, NAME-1.png, ...")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--sampler", choices=SAMPLERS, default="plms")
    p.add_argument("--seed", type=int, default=0, help="image i of a batch uses seed + i")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's eta")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--candidates", type=int, default=1, metavar="N",
                   help="try seeds seed .. seed+N-1 and keep the best by region CLIP score")
    p.add_argument("--keep-all", action="store_true",
                   help="with --candidates: write all, ranked, as NAME-0.png (best), NAME-1.png, ...")
    p.add_argument("--region", choices=("auto", "full"), default="auto",
                   help="auto: crop around the mask and stitch back; full: the whole image at its size")
    p.add_argument("--context", type=float, default=1.5, help="auto: crop = mask box x this")
    p.add_argument("--resolution", type=int, default=512, help="auto: the crop's longer side for the model")
    p.add_argument("--grow", type=int, default=0, help="grow (or, negative, shrink) the mask, in pixels")
    p.add_argument("--feather", type=int, default=8, help="blend radius in pixels at the mask's edge")
    p.add_argument("--colour-match", type=float, default=0.0, metavar="STRENGTH",
                   help="0..1: match the edit's colours to its surroundings (default 0: off)")
    p.add_argument("--exemplar-mode", choices=("squash", "crop", "pad"), default=None,
                   help="squash (the reference, default), crop (diffusers) or pad")
    p.add_argument("--exemplar-mask", help="white = the object in the exemplar; the rest is greyed")
    p.add_argument("--negative-exemplar", help="an image whose content to steer away from")
    p.add_argument("--negative-weight", type=float, default=1.0)
    p.add_argument("--compat", choices=("diffusers",), default=None,
                   help="reproduce diffusers' PaintByExamplePipeline numerically")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: fp16 on GPUs, fp32 on CPU")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=edit)

    p = commands.add_parser("convert", help="convert weights between layouts and dtypes")
    p.add_argument("source", help="a .ckpt, .safetensors or diffusers folder")
    p.add_argument("destination", help=".safetensors (single file), .ckpt, or a folder (diffusers)")
    p.add_argument("--layout", choices=("single", "ckpt", "diffusers"), default=None)
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=convert)

    p = commands.add_parser("download", help="fetch the official weights (resumable, checksummed)")
    p.add_argument("--layout", choices=("single", "diffusers"), default="single")
    p.add_argument("--dir", default=None, help=f"default: {downloads.default_model_dir()}")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=fetch)

    p = commands.add_parser("demo", help="a full edit with a tiny random model (no download)")
    p.add_argument("--out", default="pbe-demo", help="folder for the model, inputs and result")
    p.add_argument("--steps", type=int, default=20)
    p.set_defaults(run=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CliError, CheckpointError, downloads.DownloadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
