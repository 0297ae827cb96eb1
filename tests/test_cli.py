"""`python -m pbe_core`: edit, convert, and their errors (one line, exit 2, no partial file)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core.checkpoint import read_weights
from pbe_core.cli import main


@pytest.fixture()
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "scene.png")
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 8, 40, 32))
    mask.save(tmp_path / "mask.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "exemplar.png")
    return tmp_path


def edit_args(inputs, model, out, *extra):
    return [
        "edit", "--model", str(model), "--image", str(inputs / "scene.png"),
        "--mask", str(inputs / "mask.png"), "--exemplar", str(inputs / "exemplar.png"),
        "--out", str(out), "--steps", "2", "--resolution", "64", "--quiet", *extra,
    ]


def test_edit_writes_the_image_and_a_summary(inputs, tiny_paths, capsys):
    out = inputs / "result.png"
    assert main(edit_args(inputs, tiny_paths["ckpt"], out, "--sampler", "ddim", "--seed", "4")) == 0
    result = Image.open(out)
    assert result.size == (64, 48)
    assert "ddim 2 steps" in capsys.readouterr().out
    outside = np.ones((48, 64), bool)
    outside[0:40, 8:48] = False  # mask 16..40 x 8..32 plus feather 8
    assert np.array_equal(np.asarray(result)[outside], np.asarray(Image.open(inputs / "scene.png"))[outside])


@pytest.mark.parametrize(("flag", "expected"), [("auto", None), ("fp32", "float32"), ("bf16", "bfloat16")])
def test_dtype_auto_takes_bf16_where_the_cpu_has_it_natively(inputs, tiny_paths, capsys, flag, expected):
    from pbe_core.options import cpu_has_native_bf16

    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    native = bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))
    assert cpu_has_native_bf16() == native
    expected = expected or ("bfloat16" if native else "float32")
    extra = [] if flag == "auto" else ["--dtype", flag]  # auto is the default
    assert main(edit_args(inputs, tiny_paths["safetensors"], inputs / "out.png", "--device", "cpu", *extra)) == 0
    assert f"cpu {expected}," in capsys.readouterr().out


def test_batch_writes_numbered_files(inputs, tiny_paths):
    out = inputs / "batch.png"
    assert main(edit_args(inputs, tiny_paths["diffusers"], out, "--batch-size", "2")) == 0
    first, second = (np.asarray(Image.open(inputs / f"batch-{i}.png")) for i in (0, 1))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda args, d: args.__setitem__(args.index("--out") + 1, str(d / "nope" / "o.png")), "does not exist"),
        (lambda args, d: args.__setitem__(args.index("--image") + 1, str(d / "absent.png")), "--image: no such file"),
        (lambda args, d: args.__setitem__(args.index("--model") + 1, str(d / "absent.ckpt")), "--model: no such file"),
        (lambda args, d: args.__setitem__(args.index("--exemplar") + 1, str(d / "mask.png")) or
         args.__setitem__(args.index("--mask") + 1, str(d / "notes.txt")), "not an image"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(inputs, tiny_paths, capsys, change, message):
    (inputs / "notes.txt").write_text("not an image")
    args = edit_args(inputs, tiny_paths["safetensors"], inputs / "out.png")
    change(args, inputs)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (inputs / "out.png").exists()


def test_non_pbe_model_is_a_clear_error(inputs, capsys):
    from safetensors.torch import save_file

    save_file({"foo": torch.zeros(2)}, inputs / "other.safetensors")
    assert main(edit_args(inputs, inputs / "other.safetensors", inputs / "out.png")) == 2
    assert "not a Paint by Example model" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "dtype"), [("tiny.safetensors", torch.float16), ("tiny.ckpt", torch.float32), ("folder", torch.bfloat16)])
def test_convert_between_layouts(tiny_paths, tmp_path, name, dtype):
    short = {torch.float16: "fp16", torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    destination = tmp_path / name
    assert main(["convert", str(tiny_paths["ckpt"]), str(destination), "--dtype", short]) == 0
    source, converted = read_weights(tiny_paths["ckpt"]), read_weights(destination)
    for part in ("unet", "vae", "encoder"):
        a, b = getattr(source, part), getattr(converted, part)
        assert a.keys() == b.keys()
        assert all(b[k].dtype == dtype for k in b if b[k].is_floating_point())
        assert all(torch.equal(a[k].to(dtype), b[k]) for k in a)
    assert main(["convert", str(tiny_paths["ckpt"]), str(destination)]) == 2  # exists
