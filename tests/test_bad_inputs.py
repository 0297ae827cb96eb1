"""The bad-input catalogue (issue 9): every case asserts the exit status or exception, a message
that names the input and the fix, and the files left behind (none partial, no temporary files,
the permissions a plain open() gives). Most CLI cases must fail before a model is loaded: they
run in-process through `main`; only start-up cases need a subprocess. Add cases; never remove one.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from pbe_core import cli, files, images, memory, prepare
from pbe_core.checkpoint import CheckpointError, read_file
from pbe_core.cli import main
from pbe_core.options import SAMPLERS, EditOptions, OptionError, resolve_device
from pbe_core.pipeline import PaintByExample
from pbe_core.sampling import SAMPLERS as SAMPLER_FUNCTIONS

W, H = 64, 48
BOX = (16, 8, 40, 32)  # x0, y0, x1, y1 of the mask
FAR = np.ones((H, W), bool)
FAR[0:40, 8:48] = False  # beyond the mask + feather 8: the input's own pixels


def scene_array(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def mask_array():
    mask = np.zeros((H, W), np.uint8)
    x0, y0, x1, y1 = BOX
    mask[y0:y1, x0:x1] = 255
    return mask


@pytest.fixture()
def d(tmp_path):
    Image.fromarray(scene_array()).save(tmp_path / "scene.png")
    Image.fromarray(mask_array()).save(tmp_path / "mask.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "ex.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "other.txt").write_text("x")
    return tmp_path


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode for p in sorted(root.rglob("*"))}


def edit(d: Path, model, *extra) -> list[str]:
    return ["edit", "--model", str(model), "--image", str(d / "scene.png"), "--mask", str(d / "mask.png"),
            "--exemplar", str(d / "ex.png"), "--steps", "2", "--resolution", "64", "--quiet", *extra]


def bomb_png(path: Path, side=30000) -> None:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def plain_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/readme.txt", "weights are elsewhere")


# (id, arguments given the data folder and the model, what the message must contain). Each
# must exit 2 with one line naming the input and the fix, and leave the folder as it was.
CLI_CASES = [
    ("guidance-nan", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--guidance", "nan"), ["--guidance", "finite"]),
    ("guidance-inf", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--guidance", "inf"), ["--guidance", "finite"]),
    ("guidance-negative", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--guidance", "-2"), ["--guidance", "at least 0"]),
    ("steps-0", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--steps", "0"), ["--steps", "from 1 to 999"]),
    ("steps-5000", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--steps", "5000"), ["--steps", "from 1 to 999"]),
    ("context-0", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--context", "0"), ["--context", "at least 1"]),
    ("context-nan", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--context", "nan"), ["--context", "finite"]),
    ("resolution-0", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--resolution", "0"), ["--resolution", "at least 64"]),
    ("resolution-7", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--resolution", "7"), ["--resolution", "at least 64"]),
    ("seed-2^64", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--seed", str(2**64)), ["--seed", "from 0 to 18446744073709551615"]),
    ("seed-negative", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--seed", "-1"), ["--seed", "from 0"]),
    ("seed-last-of-batch", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--seed", str(2**64 - 1), "--batch-size", "2"), ["--seed", "from 0 to"]),
    ("seed-1.5", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--seed", "1.5"), ["--seed", "invalid int", "--help"]),
    ("eta-without-ddim", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--eta", "0.5"), ["--eta", "ddim"]),
    ("eta-nan", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--eta", "nan", "--sampler", "ddim"), ["--eta", "finite"]),
    ("batch-0", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--batch-size", "0"), ["--batch-size", "at least 1"]),
    ("feather-negative", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--feather", "-1"), ["--feather", "at least 0"]),
    ("negative-weight-nan", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--negative-weight", "nan"), ["--negative-weight", "finite"]),
    ("colour-match-2", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--colour-match", "2"), ["--colour-match", "0..1"]),
    ("candidates-and-batch", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--candidates", "2", "--batch-size", "2"), ["--candidates", "not both"]),
    ("sampler-unknown", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--sampler", "lms"), ["--sampler", "invalid choice"]),
    ("out-is-image", lambda d, m: edit(d, m, "--out", str(d / "scene.png")), ["--out", "--image file", "another file"]),
    ("out-is-mask", lambda d, m: edit(d, m, "--out", str(d / "." / "mask.png")), ["--out", "--mask file"]),
    ("out-is-folder", lambda d, m: edit(d, m, "--out", str(d / "folder")), ["--out", "is a folder", "result.png"]),
    ("out-folder-missing", lambda d, m: edit(d, m, "--out", str(d / "nope" / "o.png")), ["--out", "does not exist", "create it"]),
    ("out-extension", lambda d, m: edit(d, m, "--out", str(d / "o.gif")), ["--out", ".png"]),
    ("device-foo", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--device", "foo"), ["--device", "not a device", "cpu"]),
    ("dtype-fp16-cpu", lambda d, m: edit(d, m, "--out", str(d / "o.png"), "--device", "cpu", "--dtype", "fp16"), ["--dtype fp16", "bf16"]),
    ("image-missing", lambda d, m: edit(d, m, "--out", str(d / "o.png"))[:4] + [str(d / "absent.png")] + edit(d, m)[5:] + ["--out", str(d / "o.png")], ["--image", "no such file"]),
    ("image-not-an-image", lambda d, m: [a.replace("scene.png", "notes.txt") for a in edit(d, m, "--out", str(d / "o.png"))], ["--image", "not an image"]),
    ("image-is-folder", lambda d, m: [a.replace(str(d / "scene.png"), str(d / "folder")) for a in edit(d, m, "--out", str(d / "o.png"))], ["--image", "is a folder"]),
    ("image-bomb", lambda d, m: [a.replace("scene.png", "bomb.png") for a in edit(d, m, "--out", str(d / "o.png"))], ["--image", "too large", "Downscale"]),
    ("image-truncated", lambda d, m: [a.replace("scene.png", "cut.png") for a in edit(d, m, "--out", str(d / "o.png"))], ["--image", "truncated or damaged"]),
    ("mask-aspect", lambda d, m: [a.replace("mask.png", "tall.png") for a in edit(d, m, "--out", str(d / "o.png"))], ["--mask", "aspect ratios differ", "crop the mask"]),
    ("exemplar-missing", lambda d, m: [a.replace("ex.png", "gone.png") for a in edit(d, m, "--out", str(d / "o.png"))], ["--exemplar", "no such file"]),
    ("model-missing", lambda d, m: [a.replace(str(m), str(d / "none.ckpt")) for a in edit(d, m, "--out", str(d / "o.png"))], ["--model", "no such file", ".safetensors"]),
    ("model-plain-zip", lambda d, m: [a.replace(str(m), str(d / "zip.ckpt")) for a in edit(d, m, "--out", str(d / "o.png"))], ["zip.ckpt", "plain zip", "unpack"]),
    ("model-text", lambda d, m: [a.replace(str(m), str(d / "notes.txt")) for a in edit(d, m, "--out", str(d / "o.png"))], ["notes.txt", "not a weights file"]),
    ("convert-unknown-extension", lambda d, m: ["convert", str(m), str(d / "out.bin")], ["out.bin", "unknown extension", "--layout"]),
    ("convert-onto-folder", lambda d, m: ["convert", str(m), str(d / "folder"), "--layout", "single"], ["folder", "is a folder", ".safetensors"]),
    ("convert-folder-with-files", lambda d, m: ["convert", str(m), str(d / "folder"), "--overwrite"], ["folder", "other files", "new folder"]),
    ("convert-diffusers-onto-file", lambda d, m: ["convert", str(m), str(d / "notes.txt"), "--layout", "diffusers"], ["notes.txt", "is a file"]),
    ("convert-exists", lambda d, m: ["convert", str(m), str(d / "scene.png"), "--layout", "single"], ["exists", "--overwrite"]),
    ("convert-source-missing", lambda d, m: ["convert", str(d / "none.ckpt"), str(d / "new.safetensors")], ["source", "no such file"]),
    ("download-dir-is-file", lambda d, m: ["download", "--dir", str(d / "notes.txt")], ["--dir", "is a file", "folder"]),
    ("demo-out-is-file", lambda d, m: ["demo", "--out", str(d / "notes.txt")], ["--out", "is a file", "folder"]),
    ("demo-steps-0", lambda d, m: ["demo", "--out", str(d / "demo"), "--steps", "0"], ["--steps", "at least 1"]),
]


@pytest.mark.parametrize(("arguments", "needles"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_with_one_line_and_leaves_nothing(d, tiny_paths, capsys, arguments, needles):
    bomb_png(d / "bomb.png")
    (d / "cut.png").write_bytes((d / "scene.png").read_bytes()[:200])
    Image.new("L", (10, 40)).save(d / "tall.png")
    plain_zip(d / "zip.ckpt")
    before = listing(d)
    assert main(arguments(d, tiny_paths["safetensors"])) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert listing(d) == before  # nothing written, nothing temporary, no mode changed


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cli_device_cuda_without_a_gpu(d, tiny_paths, capsys):
    assert main(edit(d, tiny_paths["safetensors"], "--out", str(d / "o.png"), "--device", "cuda")) == 2
    err = capsys.readouterr().err
    assert "--device 'cuda'" in err and "no CUDA GPU" in err and "README" in err
    assert not (d / "o.png").exists()


@pytest.mark.skipif(bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(), reason="MPS present")
def test_cli_device_mps_without_mps(d, tiny_paths, capsys):
    assert main(edit(d, tiny_paths["safetensors"], "--out", str(d / "o.png"), "--device", "mps")) == 2
    assert "MPS is not available" in capsys.readouterr().err


def test_cli_grow_that_erodes_the_mask_away(d, tiny_paths, capsys):
    before = listing(d)
    assert main(edit(d, tiny_paths["safetensors"], "--out", str(d / "o.png"), "--grow", "-100")) == 2
    err = capsys.readouterr().err
    assert "grow -100 shrinks the mask to nothing" in err and "smaller shrink" in err
    assert listing(d) == before


def test_cli_refuses_an_edit_too_large_for_memory_before_working(d, tiny_paths, capsys):
    assert main(edit(d, tiny_paths["safetensors"], "--out", str(d / "o.png"), "--resolution", "65536")) == 2
    err = capsys.readouterr().err
    assert "GiB of working memory" in err and "available" in err and "lower resolution" in err
    assert not (d / "o.png").exists()


def test_cli_eof_at_the_download_prompt(d, tiny_paths, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("PBE_MODEL_DIR", str(d / "models"))
    monkeypatch.setattr(sys, "stdin", Terminal(""))  # Ctrl-D: input() raises EOFError
    arguments = [a for a in edit(d, "x", "--out", str(d / "o.png")) if a not in ("--model", "x")]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert "no model at" in err and "python -m pbe_core download" in err and "Traceback" not in err


def test_cli_sigterm_and_ctrl_c_while_saving_leave_no_file(d, tiny_paths, capsys, monkeypatch):
    from pbe_core import checkpoint

    def interrupted_by(stop):
        def write(path, writer, suffix=".tmp"):
            return files.atomic_write(path, lambda tmp: (Path(tmp).write_bytes(b"half"), stop()), suffix)

        return write

    before = listing(d)
    monkeypatch.setattr(checkpoint, "atomic_write", interrupted_by(lambda: os.kill(os.getpid(), signal.SIGTERM)))
    assert main(["convert", str(tiny_paths["ckpt"]), str(d / "m.safetensors")]) == 143
    assert "terminated" in capsys.readouterr().err
    assert listing(d) == before
    monkeypatch.setattr(checkpoint, "atomic_write", interrupted_by(lambda: _raise(KeyboardInterrupt)))
    assert main(["convert", str(tiny_paths["ckpt"]), str(d / "m.safetensors")]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert listing(d) == before
    assert signal.getsignal(signal.SIGTERM) is not cli._terminate  # main puts the handler back


def _raise(kind):
    raise kind()


STARTUP = """
import builtins, runpy, sys
real, target = builtins.__import__, sys.argv[1]
def interrupting(name, *args, **kwargs):
    if name == target:
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = interrupting
sys.argv = ["pbe_core", "edit", "--image", "a.png", "--mask", "b.png", "--exemplar", "c.png", "--out", "o.png"]
runpy.run_module("pbe_core", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module", ["cli", "torch"])
def test_ctrl_c_during_start_up_is_exit_130_without_traceback(tmp_path, module):
    done = subprocess.run([sys.executable, "-c", STARTUP, module], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_edit_help_shows_every_default(capsys):
    assert main(["edit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--steps", "50"), ("--guidance", "5.0"), ("--batch-size", "1"), ("--resolution", "512"),
                          ("--sampler", "plms"), ("--context", "1.5"), ("--feather", "8"), ("--seed", "0")):
        assert flag in text and f"(default: {default})" in text.split(flag, 2)[-1][:400], flag


# ---------------------------------------------------------------------------------------------
# Edits that run (tiny model), through the CLI and the API


@pytest.fixture(scope="module")
def pipe(tiny):
    return PaintByExample(tiny, device="cpu", dtype=torch.float32)


def test_cli_output_keeps_alpha_icc_and_umask_permissions(d, tiny_paths):
    rgba = np.concatenate([scene_array(), np.full((H, W, 1), 200, np.uint8)], axis=-1)
    rgba[:4, :4, 3] = 0
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgba, "RGBA").save(d / "scene.png", icc_profile=icc)
    old = os.umask(0o027)
    try:
        assert main(edit(d, tiny_paths["safetensors"], "--out", str(d / "o.webp"), "--steps", "1")) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((d / "o.webp").stat().st_mode) == 0o640  # 0o666 & ~umask, as open() gives
    with Image.open(d / "o.webp") as result:
        assert result.mode == "RGBA" and result.info.get("icc_profile") == icc
        pixels = np.asarray(result)
    assert np.array_equal(pixels[..., 3], rgba[..., 3])  # the input's alpha, carried
    assert np.array_equal(pixels[..., :3][FAR], rgba[..., :3][FAR])  # lossless WebP
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


def test_save_image_png_exact_replacing_keeps_mode_and_jpeg_warns(tmp_path):
    source = Image.fromarray(scene_array())
    pixels = torch.from_numpy(scene_array()).permute(2, 0, 1).float() / 255
    (tmp_path / "o.png").write_bytes(b"old")
    os.chmod(tmp_path / "o.png", 0o600)
    images.save_image(pixels, tmp_path / "o.png", source=source)
    assert stat.S_IMODE((tmp_path / "o.png").stat().st_mode) == 0o600  # as open() on a file keeps it
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), scene_array())
    with pytest.warns(UserWarning, match="JPEG cannot keep pixels bit for bit"):
        images.save_image(pixels, tmp_path / "o.jpg", source=source)
    with pytest.raises(images.ImageFileError, match="needs an image extension"):
        images.save_image(pixels, tmp_path / "o.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jpg", "o.png"]


def exif_rotated(picture: Image.Image, path: Path) -> None:
    """Store `picture` as a camera does: pixels rotated, EXIF orientation 6 to show it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    picture.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def test_cli_applies_exif_orientation_to_image_and_mask_and_writes_upright(d, tiny_paths):
    exif_rotated(Image.open(d / "scene.png"), d / "phone.png")
    exif_rotated(Image.open(d / "mask.png"), d / "phone-mask.png")
    arguments = [a.replace("scene.png", "phone.png").replace("mask.png", "phone-mask.png")
                 for a in edit(d, tiny_paths["safetensors"], "--out", str(d / "o.png"), "--steps", "1")]
    assert main(arguments) == 0
    with Image.open(d / "o.png") as result:
        assert result.size == (W, H)
        assert np.array_equal(np.asarray(result)[FAR], scene_array()[FAR])


def test_sixteen_bit_input_gives_a_sixteen_bit_png_with_its_values(tmp_path, pipe):
    grey = np.random.default_rng(3).integers(0, 65536, (H, W), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    source = images.open_image(tmp_path / "deep.png")
    result = pipe.run(source, Image.fromarray(mask_array()), Image.fromarray(scene_array()), steps=1, resolution=64)
    images.save_image(result.images[0], tmp_path / "o.png", source=source)
    data = (tmp_path / "o.png").read_bytes()
    assert data[24] == 16 and data[25] == 2  # IHDR: bit depth 16, RGB
    raw = zlib.decompress(data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8])
    rows = np.frombuffer(raw, np.uint8).reshape(H, 1 + W * 6)[:, 1:]
    values = rows.copy().view(">u2").reshape(H, W, 3)
    assert np.array_equal(values[FAR], np.repeat(grey[..., None], 3, -1)[FAR])
    with pytest.warns(UserWarning, match="16-bit depth is reduced"):
        images.save_image(result.images[0], tmp_path / "o.webp", source=source)


def test_faint_noise_in_a_mask_changes_no_kept_pixel(pipe):
    noisy = mask_array()
    noisy[noisy == 0] = 3  # 3/255 everywhere the user meant "keep"
    result = pipe.edit(Image.fromarray(scene_array()), Image.fromarray(noisy), Image.fromarray(scene_array(2)),
                       steps=1, resolution=64)[0]
    assert np.array_equal(np.asarray(result)[FAR], scene_array()[FAR])


def test_strokes_on_a_transparent_layer_are_the_mask():
    layer = np.zeros((H, W, 4), np.uint8)  # black strokes, opaque only where painted
    x0, y0, x1, y1 = BOX
    layer[y0:y1, x0:x1, 3] = 255
    expected = torch.from_numpy(mask_array() / 255).float()[None, None]
    assert torch.equal(prepare.mask_to_tensor(Image.fromarray(layer, "RGBA")), expected)
    assert torch.equal(prepare.mask_to_tensor(layer), expected)  # the same as an array


def test_a_colour_numpy_mask_is_a_mask_not_three_rows():
    colour = np.repeat(mask_array()[..., None], 3, axis=-1)
    assert prepare.mask_to_tensor(colour).shape == (1, 1, H, W)
    assert torch.equal(prepare.mask_to_tensor(colour), prepare.mask_to_tensor(mask_array()))


def test_exemplar_alpha_is_its_object_mask_unless_a_mask_is_given(pipe):
    rgba = np.concatenate([scene_array(5), np.full((H, W, 1), 255, np.uint8)], axis=-1)
    rgba[:, : W // 2, 3] = 0
    cut_out, alpha = Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba[..., 3])
    plain = Image.fromarray(rgba[..., :3])
    assert torch.equal(prepare.prepare_exemplar(cut_out, size=32), prepare.prepare_exemplar(plain, size=32, exemplar_mask=alpha))
    assert torch.equal(pipe.encode_exemplars(cut_out), pipe.encode_exemplars(plain, exemplar_mask=alpha))
    everything = Image.new("L", (W, H), 255)
    assert torch.equal(prepare.prepare_exemplar(cut_out, size=32, exemplar_mask=everything),
                       prepare.prepare_exemplar(plain, size=32))
    rgba[..., 3] = 0
    with pytest.raises(ValueError, match="the exemplar's alpha .* marks nothing"):
        prepare.prepare_exemplar(Image.fromarray(rgba, "RGBA"), size=32)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"guidance": float("nan")}, "guidance must be a finite number"),
        ({"guidance": float("inf")}, "guidance must be a finite number"),
        ({"seed": 1.5}, "seed must be a whole number"),
        ({"seed": 2**64}, "seed must be from 0 to"),
        ({"steps": True}, "steps must be a whole number"),
        ({"resolution": 7}, "resolution must be at least 64"),
        ({"context": "1.5"}, "context must be a number"),
        ({"eta": 0.3, "sampler": "euler"}, "eta applies to the ddim sampler only"),
        ({"region": "crop"}, "region must be one of auto, full"),
        ({"compat": "comfy"}, "compat must be one of diffusers"),
        ({"exemplar_mode": "zoom"}, "exemplar_mode must be one of squash, crop, pad"),
    ],
)
def test_api_refuses_bad_options_before_any_work(pipe, options, needle):
    with pytest.raises(OptionError, match=needle) as caught:
        pipe.run("not even read", None, None, **options)  # refused before the inputs are read
    assert caught.value.option in options


def test_api_non_finite_noise_and_latents_give_no_image(pipe):
    scene, mask = Image.fromarray(scene_array()), Image.fromarray(mask_array())
    noise = torch.full((1, 4, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="noise contains NaN"):
        pipe.run(scene, mask, scene, steps=1, noise=noise)
    with pytest.raises(ValueError, match="NaN or infinite latents.*lower guidance"):
        pipe.run(scene, mask, scene, steps=1, resolution=64, guidance=1e38)


def test_api_closed_image_says_so():
    with Image.open(io.BytesIO(_png_bytes())) as picture:
        pass  # closed before its pixels were read
    with pytest.raises(ValueError, match="closed before its pixels were read.*load"):
        prepare.image_to_tensor(picture)
    with pytest.raises(ValueError, match="mask: the PIL image was closed"):
        prepare.mask_to_tensor(picture)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(scene_array()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_api_open_image_refuses_a_decompression_bomb_and_applies_exif(tmp_path):
    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(images.ImageFileError, match="image: .*too large to open safely"):
        images.open_image(tmp_path / "bomb.png")
    exif_rotated(Image.fromarray(mask_array()), tmp_path / "m.png")
    assert images.open_image(tmp_path / "m.png", "mask").size == (W, H)


def test_api_atomic_write_leaves_nothing_on_failure(tmp_path):
    (tmp_path / "o.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        files.atomic_write(tmp_path / "o.png", lambda tmp: (Path(tmp).write_bytes(b"half"), _raise(RuntimeError)))
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"] and (tmp_path / "o.png").read_bytes() == b"old"


def test_api_plain_zip_is_not_a_checkpoint(tmp_path):
    plain_zip(tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="plain zip archive.*unpack"):
        read_file(tmp_path / "model.ckpt")


def test_api_memory_estimate_refuses_with_the_way_out(tiny):
    memory.check_fits(tiny, (64, 64), 1, torch.float32, torch.device("cpu"), available=1 << 40)
    with pytest.raises(memory.InsufficientMemory, match="needs about .* GiB.*lower resolution.*batch size"):
        memory.check_fits(tiny, (4096, 4096), 2, torch.float32, torch.device("cpu"), available=1 << 20)
    small, large = (memory.edit_bytes(tiny, (s, s), 1, torch.float32) for s in (512, 1024))
    assert 3.5 < large / small < 4.5  # working memory grows with the pixel count


def test_api_devices_are_checked_by_name():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(OptionError, match="'foo' is not a device"):
        resolve_device("foo")
    with pytest.raises(OptionError, match="only .* CUDA devices|no CUDA GPU"):
        resolve_device("cuda:99")


def test_option_names_match_the_samplers_and_validation_normalises():
    assert sorted(SAMPLERS) == sorted(SAMPLER_FUNCTIONS)
    options = EditOptions(steps=50.0, seed=np.int64(3)).validate()
    assert options.steps == 50 and type(options.steps) is int and options.seed == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EditOptions().validate()
    assert cli._flag("batch_size") == "--batch-size"
