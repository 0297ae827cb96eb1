"""`python -m pbe_core evaluate`: compare a fine-tune with its base.

- region CLIP score: 100 x cos(CLIP(exemplar), CLIP(edited region)) per result, averaged, for
  result folders whose files have a mask and an exemplar of the same name stem;
- CLIP-feature FID between each result folder and a folder of reference pictures;
- toy-world agreement: how often edits of held-out toy scenes take the exemplar's colour and
  shape, at guidance 1, 3 and 5, with the shuffled-exemplar control (for toy-sized models).

CLIP features come from the model's own CLIP tower unless `--tower` names another model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
GUIDANCES = (1.0, 3.0, 5.0)


def add_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="region CLIP score, CLIP-FID and toy-world agreement")
    p.add_argument("--model", required=True, help="the model to evaluate (any layout)")
    p.add_argument("--base", help="a second model (its base) for the toy-world comparison")
    p.add_argument("--results", nargs="+", default=[], help="folders of edited pictures")
    p.add_argument("--masks", help="folder of edit masks named as the results (for the CLIP score)")
    p.add_argument("--exemplars", help="folder of exemplars named as the results (for the CLIP score)")
    p.add_argument("--references", help="folder of reference pictures (for the FID)")
    p.add_argument("--tower", help="take CLIP features from this model's tower instead")
    p.add_argument("--toy", type=int, default=0, metavar="N", help="toy-world agreement on N held-out scenes")
    p.add_argument("--steps", type=int, default=25, help="sampling steps of the toy-world edits")
    p.set_defaults(run=run)


def _pictures(folder: str, what: str) -> dict[str, Path]:
    from .cli import CliError

    root = Path(folder)
    if not root.is_dir():
        raise CliError(f"--{what}: no such folder: {folder}")
    found = {p.stem: p for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not found:
        raise CliError(f"--{what}: {folder} holds no pictures ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _read(path: Path, mode: str = "RGB"):
    from .cli import _open_image

    return _open_image(str(path), "results").convert(mode)


def _region_scores(results: dict[str, Path], masks: str, exemplars: str, tower) -> tuple[float, int]:
    import torch

    from . import prepare
    from .cli import CliError
    from .evaluate import region_clip_score

    mask_files, exemplar_files = _pictures(masks, "masks"), _pictures(exemplars, "exemplars")
    stems = [s for s in results if s in mask_files and s in exemplar_files]
    if not stems:
        raise CliError("no result has both a mask and an exemplar of the same name stem")
    scores = []
    for stem in stems:
        image = prepare.image_to_tensor(_read(results[stem]))
        mask = prepare.fit_mask_to_image(prepare.mask_to_tensor(_read(mask_files[stem], "L")), image.shape[-2:])
        scores.append(region_clip_score(image, mask, _read(exemplar_files[stem]), tower))
    return float(torch.cat(scores).mean()), len(stems)


def _toy_rows(name: str, models, count: int, steps: int) -> list[str]:
    from .evaluate import toy_world_agreement
    from .pipeline import PaintByExample
    from .train.toy import toy_cases

    pipe = PaintByExample(models, device="cpu")
    cases = toy_cases(count)
    rows = []
    for guidance in GUIDANCES:
        real = toy_world_agreement(pipe, cases, guidance, steps=steps)
        control = toy_world_agreement(pipe, cases, guidance, steps=steps, shuffle=True)
        rows.append(
            f"{name:<10} {guidance:>8.0f} {real['colour']:>7.2f} {real['shape']:>7.2f} "
            f"{control['colour']:>16.2f} {control['shape']:>15.2f}"
        )
    return rows


def run(args: argparse.Namespace) -> None:
    from .checkpoint import load_models
    from .cli import CliError
    from .evaluate import clip_fid

    models = load_models(args.model)
    tower = load_models(args.tower).encoder if args.tower else models.encoder
    if not (args.results or args.toy):
        raise CliError("nothing to evaluate: give --results FOLDER ... and/or --toy N")
    if args.results and not (args.references or (args.masks and args.exemplars)):
        raise CliError("--results needs --references (FID) and/or --masks with --exemplars (CLIP score)")
    references = [_read(p) for p in _pictures(args.references, "references").values()] if args.references else None
    for folder in args.results:
        results = _pictures(folder, "results")
        if args.masks and args.exemplars:
            score, count = _region_scores(results, args.masks, args.exemplars, tower)
            print(f"{folder}: region CLIP score {score:.2f} (mean of {count})")
        if references is not None:
            fid = clip_fid([_read(p) for p in results.values()], references, tower)
            print(f"{folder}: CLIP-FID {fid:.3f} against {len(references)} references in {args.references}")
    if args.toy:
        print(f"toy-world agreement on {args.toy} held-out scenes (chance 0.17 for colour and shape)")
        print(f"{'weights':<10} {'guidance':>8} {'colour':>7} {'shape':>7} {'shuffled colour':>16} {'shuffled shape':>15}")
        named = [("model", models)] + ([("base", load_models(args.base))] if args.base else [])
        for name, candidate in named:
            for row in _toy_rows(name, candidate, args.toy, args.steps):
                print(row)
