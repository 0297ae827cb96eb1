"""Data sets users have, as sequences of (picture, object box) for the training loop.

Layouts:
- `masks`: a folder of pictures, each with `STEM.mask.png` (white = object) and optionally
  `STEM.mask-1.png`, `STEM.mask-2.png`, ...; every connected region of a mask is one object
  (pass split_regions=False to take each file's whole mask as one object);
- `coco`: a COCO-style JSON (`images` with `file_name`, `annotations` with `bbox` [x, y, w, h]
  and/or polygon `segmentation`); crowd annotations are left out;
- `openimages`: the reference's layout, `bbox/<split>/<STEM>.txt` (one `x0 y0 x1 y1` box in
  pixels per line, further columns ignored) beside `images/<split>/<STEM>.jpg`.

Every object is one entry (the reference draws one box per picture per sample; per object
gives each object its turn). Entries that cannot be used are skipped and counted by reason,
never raised mid-epoch; fewer than `min_samples` usable entries raise DataError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

Box = tuple[int, int, int, int]
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FORMATS = ("auto", "masks", "coco", "openimages")
MIN_SAMPLES = 4
MIN_REGION_PIXELS = 16  # smaller connected regions are specks, not objects


class DataError(ValueError):
    """A data set that cannot be trained on; names the folder or file and what it needs."""


@dataclass
class DataSet:
    """(picture path, object box) entries; `dataset[i]` opens the picture: (PIL RGB, box)."""

    root: Path
    layout: str
    entries: list[tuple[Path, Box]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> names

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Image.Image, Box]:
        path, box = self.entries[index]
        with Image.open(path) as picture:
            return picture.convert("RGB"), box

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)

    def summary(self) -> str:
        """'N objects in M pictures from ROOT (layout); skipped K: 2 unreadable pictures (a, b) ...'"""
        pictures = len({path for path, _ in self.entries})
        text = f"{len(self.entries)} objects in {pictures} pictures from {self.root} ({self.layout})"
        if self.skipped:
            parts = [
                f"{len(names)} {reason} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                for reason, names in self.skipped.items()
            ]
            text += f"; skipped {sum(map(len, self.skipped.values()))}: " + "; ".join(parts)
        return text

    def split(self, held_out: int) -> tuple[DataSet, DataSet]:
        """The last `held_out` entries apart (for sample edits during training)."""
        cut = len(self.entries) - held_out
        return (DataSet(self.root, self.layout, self.entries[:cut], self.skipped),
                DataSet(self.root, self.layout, self.entries[cut:]))


def _picture_size(path: Path) -> tuple[int, int] | None:
    """(W, H) from the header, or None for a file PIL cannot read."""
    try:
        with Image.open(path) as picture:
            return picture.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _clip(box: Iterable[float], size: tuple[int, int]) -> Box | None:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size[0]), min(y1, size[1])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def region_boxes(mask: np.ndarray, min_pixels: int = MIN_REGION_PIXELS) -> list[Box]:
    """Boxes of the 8-connected regions of a boolean mask with at least `min_pixels` pixels,
    in reading order (runs of each row joined to the touching runs of the row above)."""
    parent: list[int] = []
    runs: list[tuple[int, int, int]] = []  # (row, start, end) half-open

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    above: list[int] = []
    for row in range(mask.shape[0]):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask[row].astype(np.int8), [0]])))
        current = []
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            index = len(runs)
            runs.append((row, int(start), int(end)))
            parent.append(index)
            for other in above:
                _, other_start, other_end = runs[other]
                if other_start <= end and start <= other_end:  # touching, diagonals included
                    parent[find(index)] = find(other)
            current.append(index)
        above = current
    regions: dict[int, list[int]] = {}
    for index, (row, start, end) in enumerate(runs):
        box = regions.setdefault(find(index), [start, row, end, row + 1, 0])
        box[0], box[2], box[3] = min(box[0], start), max(box[2], end), row + 1
        box[4] += end - start
    return [tuple(b[:4]) for b in regions.values() if b[4] >= min_pixels]


def _mask_files(picture: Path) -> list[Path]:
    files = [picture.with_name(picture.stem + ".mask.png")]
    files += sorted(picture.parent.glob(picture.stem + ".mask-*.png"), key=lambda p: (len(p.name), p.name))
    return [f for f in files if f.is_file()]


def read_masks_folder(root: Path, split_regions: bool = True) -> DataSet:
    data = DataSet(root, "masks")
    pictures = sorted(
        p for p in root.iterdir()
        if p.suffix.lower() in PICTURE_SUFFIXES and ".mask" not in p.name and not p.name.startswith(".")
    )
    for picture in pictures:
        masks = _mask_files(picture)
        if not masks:
            data.skip("pictures without a mask file", picture.name)
            continue
        size = _picture_size(picture)
        if size is None:
            data.skip("unreadable pictures", picture.name)
            continue
        for mask_path in masks:
            try:
                with Image.open(mask_path) as mask:
                    mask_size, pixels = mask.size, np.asarray(mask.convert("L")) > 127
            except (OSError, UnidentifiedImageError, ValueError):
                data.skip("unreadable masks", mask_path.name)
                continue
            if mask_size != size:
                data.skip("masks of another size than their picture", mask_path.name)
                continue
            if split_regions:
                boxes = region_boxes(pixels)
            else:
                ys, xs = np.nonzero(pixels)
                boxes = [(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)] if len(xs) else []
            if not boxes:
                data.skip("empty masks", mask_path.name)
            data.entries.extend((picture, box) for box in boxes)
    return data


def _coco_picture(json_path: Path, images: Path | None, file_name: str) -> Path:
    candidates = [images / file_name] if images else [
        json_path.parent / file_name, json_path.parent / "images" / file_name,
        json_path.parent.parent / "images" / file_name,
    ]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _coco_box(annotation: dict) -> list[float] | None:
    if "bbox" in annotation and len(annotation["bbox"]) == 4:
        x, y, w, h = annotation["bbox"]
        return [x, y, x + w, y + h]
    polygons = annotation.get("segmentation")
    if isinstance(polygons, list) and polygons and all(isinstance(p, list) for p in polygons):
        points = np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2) for p in polygons if p])
        return [*points.min(0), *points.max(0)]
    return None


def read_coco(json_path: Path, images: Path | None = None) -> DataSet:
    data = DataSet(json_path, "coco")
    try:
        document = json.loads(json_path.read_text())
        pictures = {entry["id"]: entry for entry in document["images"]}
        annotations = document.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{json_path}: not a COCO-style JSON ({type(error).__name__}: {error}); it needs "
            '"images" (id, file_name) and "annotations" (image_id, bbox or segmentation)'
        ) from None
    sizes: dict[object, tuple[int, int] | None] = {}
    for number, annotation in enumerate(annotations):
        name = f"annotation {annotation.get('id', number)}"
        entry = pictures.get(annotation.get("image_id"))
        if entry is None:
            data.skip("annotations of unknown images", name)
            continue
        if annotation.get("iscrowd"):
            data.skip("crowd annotations", name)
            continue
        path = _coco_picture(json_path, images, entry["file_name"])
        if entry["id"] not in sizes:
            sizes[entry["id"]] = _picture_size(path)
        size = sizes[entry["id"]]
        if size is None:
            data.skip("unreadable or missing pictures", entry["file_name"])
            continue
        box = _coco_box(annotation)
        if box is None:
            data.skip("annotations without a box or polygon", name)
            continue
        clipped = _clip(box, size)
        if clipped is None:
            data.skip("empty boxes", name)
            continue
        data.entries.append((path, clipped))
    return data


def read_openimages(root: Path) -> DataSet:
    data = DataSet(root, "openimages")
    for box_file in sorted((root / "bbox").glob("*/*.txt")):
        name = f"{box_file.parent.name}/{box_file.name}"
        picture = next(
            (p for p in (root / "images" / box_file.parent.name / (box_file.stem + s) for s in (".jpg", ".jpeg", ".png"))
             if p.is_file()), None,
        )
        size = _picture_size(picture) if picture else None
        if size is None:
            data.skip("unreadable or missing pictures", name)
            continue
        for number, line in enumerate(box_file.read_text(errors="replace").splitlines()):
            if not line.strip():
                continue
            try:
                clipped = _clip(line.split()[:4], size) if len(line.split()) >= 4 else None
            except ValueError:
                clipped = None
            if clipped is None:
                data.skip("empty or malformed boxes", f"{name}:{number + 1}")
                continue
            data.entries.append((picture, clipped))
    return data


def detect_format(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if path.is_dir() and (path / "bbox").is_dir() and (path / "images").is_dir():
        return "openimages"
    if path.is_dir() and any(path.glob("*.mask*.png")):
        return "masks"
    raise DataError(
        f"{path}: no data set layout recognised. Give a folder of pictures with STEM.mask.png "
        "masks (white = object), a COCO-style .json, or an Open Images folder with bbox/ and "
        "images/ subfolders"
    )


def read_dataset(
    path: str | os.PathLike, layout: str = "auto", images: str | os.PathLike | None = None,
    split_regions: bool = True, min_samples: int = MIN_SAMPLES,
) -> DataSet:
    """Any supported layout -> DataSet; DataError if fewer than `min_samples` objects are usable."""
    path = Path(path).expanduser()
    if layout not in FORMATS:
        raise DataError(f"data format must be one of {', '.join(FORMATS)}; got {layout!r}")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    layout = detect_format(path) if layout == "auto" else layout
    if layout == "coco":
        data = read_coco(path, Path(images) if images else None)
    elif layout == "openimages":
        data = read_openimages(path)
    else:
        if not path.is_dir():
            raise DataError(f"{path}: the masks layout needs a folder")
        data = read_masks_folder(path, split_regions)
    if len(data) < min_samples:
        raise DataError(
            f"{path}: only {len(data)} usable objects ({data.summary()}); training needs at "
            f"least {min_samples}. Check the layout ({layout}) and the skipped entries."
        )
    return data
