"""`python -m pbe_core train` and `edit --lora` on the tiny model, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core.checkpoint import load_models
from pbe_core.cli import main


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def data(tmp_path):
    """Six pictures with a coloured square each, in the masks layout."""
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):
        pixels = rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)
        pixels[10:34, 8 + 3 * index : 32 + 3 * index] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        mask = Image.new("L", (64, 48), 0)
        mask.paste(255, (8 + 3 * index, 10, 32 + 3 * index, 34))
        mask.save(folder / f"{index}.mask.png")
    return folder


def train_args(model, data, out, *extra):
    return ["train", "--model", str(model), "--data", str(data), "--out", str(out), "--resolution", "64",
            "--batch-size", "2", "--lr", "1e-3", "--warmup", "0", "--quiet", *extra]


def environment():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


def test_train_lora_in_a_subprocess_then_edit_with_it(tiny_paths, data, tmp_path):
    out = tmp_path / "adapter.safetensors"
    command = [sys.executable, "-m", "pbe_core", *train_args(
        tiny_paths["diffusers"], data, out, "--steps", "2", "--lora", "2", "--sample-every", "2",
        "--held-out", "2", "--sample-steps", "2")]
    done = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "6 objects in 6 pictures" in done.stdout and "LoRA rank 2" in done.stdout
    assert out.is_file() and out.stat().st_size < tiny_paths["safetensors"].stat().st_size / 20
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() makes it
    assert (tmp_path / "adapter.samples" / "step-000002.png").is_file()

    scene, mask = data / "0.png", data / "0.mask.png"
    edit = ["edit", "--model", str(tiny_paths["ckpt"]), "--image", str(scene), "--mask", str(mask),
            "--exemplar", str(data / "1.png"), "--steps", "2", "--resolution", "64", "--quiet"]
    assert main([*edit, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*edit, "--out", str(tmp_path / "lora.png"), "--lora", str(out)]) == 0
    assert main([*edit, "--out", str(tmp_path / "off.png"), "--lora", str(out), "--lora-strength", "0"]) == 0
    plain, lora, off = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("plain", "lora", "off"))
    assert not np.array_equal(plain, lora)
    assert np.abs(plain.astype(int) - off.astype(int)).max() <= 1


def test_train_full_model_writes_a_loadable_single_file(tiny_paths, data, tmp_path, capsys):
    out = tmp_path / "tuned.safetensors"
    assert main(train_args(tiny_paths["ckpt"], data, out, "--steps", "2", "--state", str(tmp_path / "s.pt"))) == 0
    assert "full model" in capsys.readouterr().out
    models = load_models(out)
    assert models.unet.config.model_channels == 32
    assert (tmp_path / "s.pt").is_file()
    assert main(train_args(tiny_paths["ckpt"], data, out, "--steps", "3", "--resume", str(tmp_path / "s.pt"))) == 0
    assert "resumed" in capsys.readouterr().out


def test_ctrl_c_saves_a_state_that_resumes(tiny_paths, data, tmp_path):
    out = tmp_path / "tuned.safetensors"
    args = train_args(tiny_paths["safetensors"], data, out, "--steps", "500")
    args.remove("--quiet")
    process = subprocess.Popen([sys.executable, "-m", "pbe_core", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment())
    progress = ""
    deadline = time.monotonic() + 240
    while "step 1/500" not in progress and time.monotonic() < deadline:
        progress += process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 130, stdout
    state = out.with_name(out.name + ".state.pt")
    assert state.is_file() and "--resume" in stdout
    assert not out.exists()
    step = int(stdout.split("stopped at step ")[1].split(":")[0])
    assert main(train_args(tiny_paths["safetensors"], data, out, "--steps", str(step + 1), "--resume", str(state))) == 0
    assert out.is_file()


def test_train_errors_are_one_line(tiny_paths, data, tmp_path, capsys):
    assert main(train_args(tiny_paths["ckpt"], tmp_path / "nothing", tmp_path / "o.safetensors")) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(train_args(tiny_paths["ckpt"], data, tmp_path / "o.ckpt")) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert main(train_args(tiny_paths["ckpt"], data, tmp_path / "o.safetensors", "--steps", "1",
                           "--lora-targets", "nope")) == 2
    assert "unknown" in capsys.readouterr().err
    assert main(["edit", "--model", str(tiny_paths["ckpt"]), "--image", str(data / "0.png"), "--mask",
                 str(data / "0.mask.png"), "--exemplar", str(data / "1.png"), "--out", str(tmp_path / "x.png"),
                 "--lora", str(tiny_paths["safetensors"]), "--quiet"]) == 2
    assert "not a Paint by Example LoRA" in capsys.readouterr().err


def test_help_lists_every_option_with_its_default(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--model", "--data", "--out", "--steps", "--resolution", "--batch-size", "--lora",
                   "--lr", "--seed", "--resume", "--device", "--dtype", "--grad-accum", "--checkpointing",
                   "--sample-every", "--warmup", "--data-format"):
        assert option in text
    assert "(default: 512)" in text and "(default: 1e-05)" in text
