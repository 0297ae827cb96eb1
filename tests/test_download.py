"""pbe_core.download against a local HTTP server (never the internet)."""

import hashlib
import io
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pbe_core import download as dl

BLOB = os.urandom(3 << 20)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
CUT_AT = 1_000_000


class Handler(BaseHTTPRequestHandler):
    """Serves `server.files` (path -> bytes) with Range support, or not, and can cut once."""

    def do_GET(self):
        state = self.server
        state.seen.append((self.path, self.headers.get("Range")))
        if self.path == "/moved":  # as the hub does, sending large files on to its CDN
            self.send_response(302)
            self.send_header("Location", "/blob")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        if wanted and not state.ignore_range and start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if wanted and not state.ignore_range:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
            start = 0
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if state.cut_after is not None:  # first request only: promise all, send a part, hang up
            payload, state.cut_after = payload[: state.cut_after], None
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files = {"/blob": BLOB}
    httpd.seen, httpd.ignore_range, httpd.cut_after = [], False, None
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def part_of(dest):
    return dest.with_name(dest.name + ".part")


def test_full_download_lands_atomically_with_progress(server, tmp_path):
    dest = tmp_path / "sub" / "model.bin"
    calls = []
    out = dl.download_file(server.url + "/blob", dest, sha256=BLOB_SHA, size=len(BLOB),
                           progress=lambda done, total: calls.append((done, total)))
    assert out == dest and dest.read_bytes() == BLOB and not part_of(dest).exists()
    assert calls[-1] == (len(BLOB), len(BLOB))
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:], strict=False))
    assert server.seen == [("/blob", None)]


def test_cut_transfer_keeps_part_and_resumes_with_range(server, tmp_path):
    dest = tmp_path / "model.bin"
    server.cut_after = CUT_AT
    with pytest.raises(dl.DownloadError, match="resume"):
        dl.download_file(server.url + "/blob", dest, sha256=BLOB_SHA)
    assert not dest.exists() and part_of(dest).read_bytes() == BLOB[:CUT_AT]
    dl.download_file(server.url + "/blob", dest, sha256=BLOB_SHA)
    assert server.seen[-1] == ("/blob", f"bytes={CUT_AT}-")
    assert dest.read_bytes() == BLOB and not part_of(dest).exists()


def test_resume_survives_a_redirect(server, tmp_path):
    dest = tmp_path / "model.bin"
    part_of(dest).write_bytes(BLOB[:CUT_AT])
    dl.download_file(server.url + "/moved", dest, sha256=BLOB_SHA)
    assert server.seen == [("/moved", f"bytes={CUT_AT}-"), ("/blob", f"bytes={CUT_AT}-")]
    assert dest.read_bytes() == BLOB


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.bin"
    wrong = "0" * 64
    with pytest.raises(dl.ChecksumError) as caught:
        dl.download_file(server.url + "/blob", dest, sha256=wrong)
    message = str(caught.value)
    assert "model.bin" in message and wrong in message and BLOB_SHA in message
    assert not dest.exists() and not part_of(dest).exists()


def test_wrong_size_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.bin"
    with pytest.raises(dl.ChecksumError, match=f"expected {len(BLOB) + 1} bytes"):
        dl.download_file(server.url + "/blob", dest, size=len(BLOB) + 1)
    assert not dest.exists() and not part_of(dest).exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "model.bin"
    part_of(dest).write_bytes(b"garbage" * 1000)  # would corrupt the file if appended to
    server.ignore_range = True
    dl.download_file(server.url + "/blob", dest, sha256=BLOB_SHA)
    assert server.seen == [("/blob", "bytes=7000-")]
    assert dest.read_bytes() == BLOB and not part_of(dest).exists()


def test_complete_part_answered_416_is_finished_without_refetch(server, tmp_path):
    dest = tmp_path / "model.bin"
    part_of(dest).write_bytes(BLOB)
    dl.download_file(server.url + "/blob", dest, sha256=BLOB_SHA)
    assert server.seen == [("/blob", f"bytes={len(BLOB)}-")]
    assert dest.read_bytes() == BLOB and not part_of(dest).exists()


def test_part_longer_than_remote_file_restarts(server, tmp_path):
    dest = tmp_path / "model.bin"
    part_of(dest).write_bytes(BLOB + b"extra")
    dl.download_file(server.url + "/blob", dest, sha256=BLOB_SHA)
    assert server.seen == [("/blob", f"bytes={len(BLOB) + 5}-"), ("/blob", None)]
    assert dest.read_bytes() == BLOB


def test_http_error_is_a_download_error(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download_file(server.url + "/missing", tmp_path / "x.bin")


def test_connection_refused_says_offline_and_how_to_place_the_file(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.ckpt"
    dest = tmp_path / "models" / "paint-by-example.ckpt"
    with pytest.raises(dl.DownloadError) as caught:
        dl.download_file(url, dest, timeout=5)
    message = str(caught.value)
    assert "offline" in message and url in message
    assert str(dest.parent) in message and dest.name in message
    assert not dest.exists()


@pytest.mark.parametrize("layout", ["single", "diffusers"])
@pytest.mark.parametrize("via_env", [False, True])
def test_download_official_builds_hub_paths(server, tmp_path, monkeypatch, layout, via_env):
    items = dl.OFFICIAL_FILES[layout]
    stand_ins = {item.path: item.path.encode() * 3 for item in items}
    server.files = {f"/{dl.REPO_ID}/resolve/{item.revision}/{item.path}": stand_ins[item.path]
                    for item in items}
    if via_env:
        monkeypatch.setenv("HF_ENDPOINT", server.url + "/")
    base_url = None if via_env else server.url
    out = dl.download_official(tmp_path, layout, base_url=base_url, verify=False)
    assert out == tmp_path / dl.LOCAL_NAMES[layout]
    assert sorted(path for path, _ in server.seen) == sorted(server.files)
    if layout == "single":
        assert out.read_bytes() == stand_ins["model.ckpt"]
    else:
        for path, body in stand_ins.items():
            assert (out / path).read_bytes() == body
    dl.download_official(tmp_path, layout, base_url=base_url, verify=False)
    assert len(server.seen) == len(items)  # files in place are not fetched again


def test_download_official_checks_the_table(server, tmp_path):
    item = dl.OFFICIAL_FILES["single"][0]
    server.files = {f"/{dl.REPO_ID}/resolve/{item.revision}/{item.path}": b"not the model"}
    with pytest.raises(dl.ChecksumError, match=str(item.size)):
        dl.download_official(tmp_path, "single", base_url=server.url)
    assert list(tmp_path.iterdir()) == []


def test_official_table_is_well_formed():
    for items in dl.OFFICIAL_FILES.values():
        for item in items:
            assert item.sha256 is None or len(bytes.fromhex(item.sha256)) == 32
            assert len(item.revision) == 40
    assert dl.official_url(dl.OFFICIAL_FILES["single"][0], "https://hf.example/") == (
        f"https://hf.example/Fantasy-Studio/Paint-by-Example/resolve/{dl.SINGLE_REVISION}"
        "/model.ckpt")


def test_bad_layout_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        dl.download_official(tmp_path, "safetensors")


def test_default_model_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PBE_MODEL_DIR", str(tmp_path))
    assert dl.default_model_dir() == tmp_path
    monkeypatch.delenv("PBE_MODEL_DIR")
    assert dl.default_model_dir() == Path.home() / ".cache" / "paint-by-example"


def test_text_progress_is_throttled_and_ends_the_line():
    stream = io.StringIO()
    bar = dl.TextProgress("model.ckpt", stream=stream, interval=3600)
    for done in range(0, 5_000_001, 1_000_000):
        bar(done, 5_000_000)
    lines = stream.getvalue().split("\r")[1:]
    assert len(lines) == 2  # the first call and the finishing one
    assert lines[-1].startswith("model.ckpt  5.0 MB/5.0 MB 100.0%") and lines[-1].endswith("\n")
