"""The data readers on small generated data sets: masks folders, COCO JSON, Open Images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pbe_core.train import TrainConfig
from pbe_core.train.data import DataError, read_dataset, region_boxes
from pbe_core.train.loop import SampleStream


def picture(size=(40, 30), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def mask(size, *boxes) -> Image.Image:
    result = Image.new("L", size, 0)
    for box in boxes:
        result.paste(255, box)
    return result


def test_region_boxes_splits_connected_regions_and_drops_specks():
    pixels = np.zeros((20, 30), bool)
    pixels[2:8, 3:9] = True
    pixels[8:12, 9:12] = True  # touches the first diagonally: the same region
    pixels[14:18, 20:28] = True
    pixels[0, 29] = True  # a speck
    assert region_boxes(pixels) == [(3, 2, 12, 12), (20, 14, 28, 18)]
    u_shape = np.zeros((10, 10), bool)
    u_shape[2:8, 1:3] = u_shape[2:8, 7:9] = u_shape[6:8, 1:9] = True
    assert region_boxes(u_shape) == [(1, 2, 9, 8)]


def test_masks_folder_reads_several_objects_and_skips_bad_entries(tmp_path):
    for index in range(3):
        picture(seed=index).save(tmp_path / f"good{index}.png")
        mask((40, 30), (5, 5, 20, 20)).save(tmp_path / f"good{index}.mask.png")
    mask((40, 30), (25, 2, 38, 12)).save(tmp_path / "good0.mask-1.png")
    picture().save(tmp_path / "two.jpg")
    mask((40, 30), (2, 2, 10, 10), (20, 15, 35, 28)).save(tmp_path / "two.mask.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    mask((40, 30), (1, 1, 9, 9)).save(tmp_path / "broken.mask.png")
    picture().save(tmp_path / "small.png")
    mask((20, 15), (1, 1, 9, 9)).save(tmp_path / "small.mask.png")
    picture().save(tmp_path / "empty.png")
    mask((40, 30)).save(tmp_path / "empty.mask.png")
    picture().save(tmp_path / "alone.png")

    data = read_dataset(tmp_path)
    assert data.layout == "masks"
    assert len(data) == 3 + 1 + 2
    assert (tmp_path / "good0.png", (25, 2, 38, 12)) in data.entries
    assert (tmp_path / "two.jpg", (20, 15, 35, 28)) in data.entries
    assert data.skipped == {
        "pictures without a mask file": ["alone.png"],
        "unreadable pictures": ["broken.png"],
        "empty masks": ["empty.mask.png"],
        "masks of another size than their picture": ["small.mask.png"],
    }
    assert "skipped 4" in data.summary() and "broken.png" in data.summary()
    image, box = data[0]
    assert image.mode == "RGB" and image.size == (40, 30) and len(box) == 4
    whole = read_dataset(tmp_path, split_regions=False)
    assert (tmp_path / "two.jpg", (2, 2, 35, 28)) in whole.entries


def test_too_few_objects_is_a_clear_error_naming_the_folder(tmp_path):
    for index in range(2):
        picture(seed=index).save(tmp_path / f"p{index}.png")
        mask((40, 30), (5, 5, 20, 20)).save(tmp_path / f"p{index}.mask.png")
    with pytest.raises(DataError, match=rf"{tmp_path}: only 2 usable objects.*at least 4"):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match="no data set layout recognised"):
        read_dataset(tmp_path / "p0.png")
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "missing")


def test_coco_json_boxes_and_polygons(tmp_path):
    (tmp_path / "images").mkdir()
    for index in range(3):
        picture(seed=index).save(tmp_path / "images" / f"{index}.jpg")
    (tmp_path / "images" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    document = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(3)]
        + [{"id": 7, "file_name": "bad.jpg"}, {"id": 8, "file_name": "absent.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 0, "bbox": [5, 5, 10, 12]},
            {"id": 2, "image_id": 0, "segmentation": [[20, 2, 30, 2, 30, 9, 22, 12]]},
            {"id": 3, "image_id": 1, "bbox": [0, 0, 40, 30], "segmentation": [[1, 1, 2, 2, 3, 1]]},
            {"id": 4, "image_id": 2, "bbox": [35, 25, 20, 20]},  # clipped to the picture
            {"id": 5, "image_id": 2, "bbox": [10, 10, 0, 5]},  # empty
            {"id": 6, "image_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 7, "image_id": 7, "bbox": [1, 1, 5, 5]},
            {"id": 8, "image_id": 8, "bbox": [1, 1, 5, 5]},
            {"id": 9, "image_id": 99, "bbox": [1, 1, 5, 5]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(document))
    data = read_dataset(tmp_path / "instances.json")
    assert data.layout == "coco"
    assert [box for _, box in data.entries] == [(5, 5, 15, 17), (20, 2, 30, 12), (0, 0, 40, 30), (35, 25, 40, 30)]
    assert data.skipped == {
        "empty boxes": ["annotation 5"],
        "crowd annotations": ["annotation 6"],
        "unreadable or missing pictures": ["bad.jpg", "absent.jpg"],
        "annotations of unknown images": ["annotation 9"],
    }
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not a COCO-style JSON"):
        read_dataset(tmp_path / "broken.json")


def test_openimages_layout(tmp_path):
    for split in ("train_0", "train_a"):
        (tmp_path / "bbox" / split).mkdir(parents=True)
        (tmp_path / "images" / split).mkdir(parents=True)
    picture(seed=1).save(tmp_path / "images" / "train_0" / "0001.jpg")
    (tmp_path / "bbox" / "train_0" / "0001.txt").write_text("3.0 4.0 20.0 25.0 Cat\n10 10 30 28\n")
    picture(seed=2).save(tmp_path / "images" / "train_a" / "00a2.jpg")
    (tmp_path / "bbox" / "train_a" / "00a2.txt").write_text("1 1 15 15\n5 5 5 20\nx y z w\n0 0 39 29\n")
    (tmp_path / "bbox" / "train_a" / "lost.txt").write_text("1 1 15 15\n")
    data = read_dataset(tmp_path)
    assert data.layout == "openimages"
    assert [box for _, box in data.entries] == [(3, 4, 20, 25), (10, 10, 30, 28), (1, 1, 15, 15), (0, 0, 39, 29)]
    assert data.skipped == {
        "empty or malformed boxes": ["train_a/00a2.txt:2", "train_a/00a2.txt:3"],
        "unreadable or missing pictures": ["train_a/lost.txt"],
    }


def test_a_picture_broken_after_indexing_is_skipped_not_raised(tmp_path):
    for index in range(4):
        picture(size=(48, 40), seed=index).save(tmp_path / f"p{index}.png")
        mask((48, 40), (8, 8, 30, 30)).save(tmp_path / f"p{index}.mask.png")
    data = read_dataset(tmp_path)
    (tmp_path / "p2.png").write_bytes(b"gone")
    stream = SampleStream(data, TrainConfig(resolution=32, batch_size=1), 32)
    batch = stream.batch(0, 8)  # two epochs: p2 is drawn twice and replaced each time
    assert batch["image"].shape == (8, 3, 32, 32)
    assert len(stream.skipped) == 2 and all("cannot identify" in s or "p2" in s for s in stream.skipped)
