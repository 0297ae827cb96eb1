"""Official Paint by Example weights: resumable, checksummed, atomic downloads (stdlib only).

Models live in `default_model_dir()`: `$PBE_MODEL_DIR` when set, else `~/.cache/paint-by-example`.
`download_official` puts the single-file checkpoint there as `paint-by-example.ckpt` and the
diffusers layout in the folder `paint-by-example-diffusers/`. The hub address follows
`$HF_ENDPOINT` when set, as users behind a mirror expect.

A download streams into `<dest>.part` while hashing, resumes that file with an HTTP Range request,
checks size and sha256, and only then renames it onto `dest`: `dest` is either absent or whole.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import __version__

ProgressFn = Callable[[int, int | None], None]  # (done_bytes, total_bytes or None if unknown)

REPO_ID = "Fantasy-Studio/Paint-by-Example"
HUB_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
# Revisions are pinned so that the table below stays true. main's model.ckpt is the 12.6 GB
# training checkpoint (optimizer state included, re-uploaded with the diffusers weights in
# f199dc0); the 5.24 GB weights-only checkpoint is the upload of commit 37bfdc5.
SINGLE_REVISION = "37bfdc569d2fbd2c2e0aecce78989d1cba8335f2"
DIFFUSERS_REVISION = "351e6427d8c28a3b24f7c751d43eb4b6735127f7"  # main: f199dc0 + README edit


@dataclass(frozen=True)
class OfficialFile:
    path: str  # inside the hub repository (and inside the local diffusers folder)
    revision: str
    size: int | None  # bytes; None where no exact figure is published
    sha256: str | None  # the git-LFS oid; None where none is published: the check is skipped


# Sizes and oids come from the hub's LFS pointers and file pages. The small JSON files are plain
# git files: the hub shows their exact size but no sha256. The image encoder's oid and exact size
# and the UNet's exact size were not found (the UNet's oid suffices). The VAE's oid is the one of
# stable-diffusion-v1-5's VAE (the same bytes), whose size a hub cache listing gives.
OFFICIAL_FILES: dict[str, tuple[OfficialFile, ...]] = {
    "single": (
        OfficialFile("model.ckpt", SINGLE_REVISION, 5_241_118_218,
                     "cfe1becd255dfd8aee990faef838087ded20da406afe3bd73a585423afaa0dde"),
    ),
    "diffusers": (
        OfficialFile("model_index.json", DIFFUSERS_REVISION, 498, None),
        OfficialFile("feature_extractor/preprocessor_config.json", DIFFUSERS_REVISION, 518, None),
        OfficialFile("image_encoder/config.json", DIFFUSERS_REVISION, 524, None),
        OfficialFile("image_encoder/pytorch_model.bin", DIFFUSERS_REVISION, None, None),  # 1.47 GB
        OfficialFile("scheduler/scheduler_config.json", DIFFUSERS_REVISION, 346, None),
        OfficialFile("unet/config.json", DIFFUSERS_REVISION, None, None),
        OfficialFile("unet/diffusion_pytorch_model.bin", DIFFUSERS_REVISION, None,  # 3.44 GB
                     "2020aa8102bd6ea977738454f87d8e08483271469bfa1ebd1b62534f0cf7d371"),
        OfficialFile("vae/config.json", DIFFUSERS_REVISION, 553, None),
        OfficialFile("vae/diffusion_pytorch_model.bin", DIFFUSERS_REVISION, 334_707_217,
                     "1b134cded8eb78b184aefb8805b6b572f36fa77b255c483665dda931fa0130c5"),
    ),
}
LOCAL_NAMES = {"single": "paint-by-example.ckpt", "diffusers": "paint-by-example-diffusers"}

_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download that could not finish; the message says what to do next."""


class ChecksumError(DownloadError):
    """The bytes arrived but are not the expected file; the partial file has been deleted."""


def default_model_dir() -> Path:
    """`$PBE_MODEL_DIR` when set, else `~/.cache/paint-by-example`."""
    configured = os.environ.get("PBE_MODEL_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "paint-by-example"


def official_url(item: OfficialFile, base_url: str | None = None) -> str:
    """`item`'s address under `base_url`, else `$HF_ENDPOINT`, else the hub."""
    base = (base_url or os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT).rstrip("/")
    return f"{base}/{REPO_ID}/resolve/{item.revision}/{item.path}"


def official_target(layout: str, dest_dir: str | os.PathLike | None = None) -> Path:
    """Where `download_official` puts `layout`: the checkpoint file or the diffusers folder."""
    if layout not in LOCAL_NAMES:
        raise ValueError(f"layout must be 'single' or 'diffusers', got {layout!r}")
    return Path(dest_dir if dest_dir is not None else default_model_dir()) / LOCAL_NAMES[layout]


def download_official(dest_dir: str | os.PathLike | None = None, layout: str = "single", *,
                      progress: Callable[[str], ProgressFn] | None = None,
                      base_url: str | None = None, verify: bool = True, timeout: float = 30) -> Path:
    """Fetch the official weights and return the checkpoint file ('single') or folder ('diffusers').

    `progress` makes each file's callback from its repository path (`TextProgress` fits).
    `base_url` replaces the hub endpoint. Files already in place with the right size are kept.
    `verify=False` skips the size and sha256 checks (for servers handing out stand-ins).
    """
    target = official_target(layout, dest_dir)
    for item in OFFICIAL_FILES[layout]:
        local = target / item.path if layout == "diffusers" else target
        if local.is_file() and (not verify or item.size in (None, local.stat().st_size)):
            continue
        download_file(official_url(item, base_url), local,
                      sha256=item.sha256 if verify else None, size=item.size if verify else None,
                      progress=progress(item.path) if progress else None, timeout=timeout)
    return target


def download_file(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
                  size: int | None = None, progress: ProgressFn | None = None,
                  timeout: float = 30, chunk: int = CHUNK) -> Path:
    """Fetch `url` into `dest` atomically, resuming `dest.part` if an earlier call left one.

    Raises DownloadError when offline, on an HTTP error or a cut transfer (the .part is kept for
    the next call to resume), ChecksumError on a wrong size or sha256 (the .part is deleted).
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    hasher, done = _hash_part(part, chunk)
    if size is not None and done > size:  # longer than the file: cannot be a prefix of it
        part.unlink()
        hasher, done = hashlib.sha256(), 0
    with _open(url, dest, done, timeout) as response:
        start, total = _content_range(response)
        if response.status == 416:  # nothing past the part: it is whole if the totals agree
            if (total if total is not None else size) != done:
                part.unlink()
                return download_file(url, dest, sha256=sha256, size=size, progress=progress,
                                     timeout=timeout, chunk=chunk)
        else:
            if response.status == 206 and start != done:
                part.unlink()
                raise DownloadError(f"{url} answered a range that does not start at {done}; "
                                    "the partial file was deleted, run again to start afresh.")
            if response.status != 206:  # the server ignored Range: start over cleanly
                hasher, done = hashlib.sha256(), 0
                length = response.headers.get("Content-Length")
                total = int(length) if length else None
            done = _stream(response, part, hasher, done, total if total is not None else size,
                           progress, chunk, url)
    _verify(part, dest, hasher.hexdigest(), done, sha256, size)
    os.replace(part, dest)
    return dest


def _hash_part(part: Path, chunk: int) -> tuple[Any, int]:
    hasher, done = hashlib.sha256(), 0
    if part.is_file():
        with open(part, "rb") as existing:
            while block := existing.read(chunk):
                hasher.update(block)
                done += len(block)
    return hasher, done


def _open(url: str, dest: Path, done: int, timeout: float):
    headers = {"User-Agent": f"paint-by-example/{__version__}"}
    if done:
        headers["Range"] = f"bytes={done}-"
    opener = urllib.request.build_opener()  # built per call so proxy variables are read now
    try:
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done:
            return error  # handled by the caller, with its Content-Range header
        raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}. To install by "
                            f"hand, place the file in {dest.parent} as {dest.name}.") from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"Could not download {url} ({reason}): this machine seems offline or cannot reach "
            f"that host (behind a mirror? set HF_ENDPOINT). To install by hand, fetch that URL "
            f"elsewhere and place the file in the folder {dest.parent} with the name {dest.name}."
        ) from error


def _content_range(response) -> tuple[int | None, int | None]:
    """(first byte, full size) from a Content-Range header; None for what it does not say."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def _stream(response, part: Path, hasher, done: int, total: int | None,
            progress: ProgressFn | None, chunk: int, url: str) -> int:
    with open(part, "ab" if done else "wb") as out:
        while True:
            try:
                block = response.read(chunk)
            except (OSError, http.client.HTTPException) as error:
                raise _cut(url, part, done, error) from error
            if not block:
                break
            out.write(block)
            hasher.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    if total is not None and done < total:  # http.client reports an early close as a short read
        raise _cut(url, part, done, "connection closed early")
    return done


def _cut(url: str, part: Path, done: int, why: object) -> DownloadError:
    return DownloadError(f"Download of {url} stopped after {done} bytes ({why}). The partial "
                         f"file {part} is kept: run the same command again to resume.")


def _verify(part: Path, dest: Path, actual: str, done: int, sha256: str | None,
            size: int | None) -> None:
    if size is not None and done != size:
        problem = f"expected {size} bytes, got {done}"
    elif sha256 is not None and actual != sha256.lower():
        problem = f"expected sha256 {sha256.lower()}, got {actual}"
    else:
        return
    part.unlink(missing_ok=True)
    raise ChecksumError(f"Checksum mismatch for {dest}: {problem}. The partial download was "
                        "deleted; run again to fetch it afresh.")


class TextProgress:
    """A `ProgressFn` drawing one line on stderr, redrawn at most every `interval` seconds."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.25):
        self.label, self.stream, self.interval = label, stream or sys.stderr, interval
        self._last_draw = float("-inf")
        self._first: tuple[float, int] | None = None  # (time, bytes) at the first call

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        finished = total is not None and done >= total
        if now - self._last_draw < self.interval and not finished:
            return
        self._last_draw = now
        rate = (done - self._first[1]) / max(now - self._first[0], 1e-6)
        amount = _human(done)
        if total is not None:
            amount += f"/{_human(total)} {100 * done / max(total, 1):5.1f}%"
        self.stream.write(f"\r{self.label}  {amount}  {_human(rate)}/s ")
        self.stream.write("\n" if finished else "")
        self.stream.flush()


def _human(count: float) -> str:
    units, power = ("B", "KB", "MB", "GB"), 0
    while count >= 1000 and power < len(units) - 1:
        count, power = count / 1000, power + 1
    return f"{count:.1f} {units[power]}"
