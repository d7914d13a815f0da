"""Published weights by tag, against a local HTTP server: download, check, convert, count; a wrong hash, a cut
download and no network leave nothing in the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from support.published_layouts import p2pnet_state

import zoo
from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.models.weights import hub
from zoo.models.weights.checkpoint import Checkpoint

FILES: dict[str, bytes] = {}


class Handler(BaseHTTPRequestHandler):
    """/NAME serves FILES[NAME]; /cut/NAME promises all of it and closes after half."""

    def do_GET(self):
        cut = self.path.startswith("/cut/")
        body = FILES.get(self.path.removeprefix("/cut/").lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    FILES["SHTechA.pth"] = _saved({"model": p2pnet_state(batch_norm=True)})
    FILES["small.pth"] = _saved({"model": {"w": torch.arange(1000.0)}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _serve_as(monkeypatch, tag: str, url: str, digest: str | None) -> hub.Published:
    entry = dataclasses.replace(hub.PUBLISHED[tag], url=url, digest=digest)
    monkeypatch.setitem(hub.PUBLISHED, tag, entry)
    return entry


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_the_git_blob_id_is_sha1_of_header_and_content(tmp_path):
    (tmp_path / "f").write_bytes(b"hello\n")
    # `git hash-object` of a file holding "hello\n"
    assert hub.file_digest(tmp_path / "f", "git-blob-sha1") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_a_tag_is_downloaded_checked_converted_and_counts(server, cache, monkeypatch, tmp_path):
    data = FILES["SHTechA.pth"]
    _serve_as(monkeypatch, "p2pnet.shtech_a", f"{server}/SHTechA.pth", f"git-blob-sha1:{_git_blob(data)}")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "street.png"), np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8))
    assert main(["predict", "--weights", "p2pnet.shtech_a", str(photos), "--out", str(tmp_path / "out")]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) == 1 and summary["count"].notna().all()
    assert _files(cache) == ["converted/p2pnet.shtech_a.pt", "published/SHTechA.pth"]
    assert (cache / "published" / "SHTechA.pth").read_bytes() == data
    card = Checkpoint.load(cache / "converted" / "p2pnet.shtech_a.pt").model_card()
    assert card["model"] == "p2pnet" and card["source"]["tag"] == "p2pnet.shtech_a"
    assert card["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    # create_model with the tag gives the weights of the published file, converted (now from the cache)
    (tmp_path / "raw.pth").write_bytes(data)
    tagged = zoo.create_model("p2pnet.shtech_a", pretrained=True).state_dict()
    direct = zoo.create_model("p2pnet", checkpoint_path=tmp_path / "raw.pth").state_dict()
    assert all(torch.equal(tagged[k], direct[k]) for k in direct)
    assert not all(torch.equal(v, zoo.create_model("p2pnet.shtech_a").state_dict()[k]) for k, v in direct.items())


def test_a_wrong_hash_is_refused_and_nothing_cached(server, cache, monkeypatch):
    _serve_as(monkeypatch, "p2pnet.shtech_a", f"{server}/small.pth", "git-blob-sha1:" + "0" * 40)
    with pytest.raises(ZooError, match="expected 0000.*refused"):
        Checkpoint.load("p2pnet.shtech_a")
    assert _files(cache) == []


def test_an_interrupted_download_leaves_nothing(server, cache, monkeypatch):
    _serve_as(monkeypatch, "csrnet.shtech_b", f"{server}/cut/small.pth", None)
    with pytest.raises(ZooError, match="cut off"):
        zoo.create_model("csrnet.shtech_b", pretrained=True)
    assert _files(cache) == []


def test_offline_one_line_says_which_url_and_where(cache, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = _serve_as(monkeypatch, "csrnet.shtech_a", f"http://127.0.0.1:{port}/CSRNet_SHA.pth", None)
    assert main(["predict", "--weights", "csrnet.shtech_a", "nowhere.png"]) == 2
    error = capsys.readouterr().err.strip().split("\n")[-1]
    assert entry.url in error and str(cache / "published" / "CSRNet_SHA.pth") in error and "zoo convert" in error
    assert _files(cache) == []


def test_without_a_published_hash_the_first_download_is_recorded_and_later_copies_checked(server, cache,
                                                                                           monkeypatch):
    entry = _serve_as(monkeypatch, "csrnet.shtech_a", f"{server}/small.pth", None)
    path = hub.fetch(entry)
    recorded = (cache / "published" / "CSRNet_SHA.pth.sha256").read_text().strip()
    assert recorded == hashlib.sha256(FILES["small.pth"]).hexdigest()
    path.write_bytes(FILES["small.pth"][:-1] + b"x")  # a different copy put in its place
    with pytest.raises(ZooError, match="delete it and fetch"):
        hub.fetch(entry)


def test_a_file_named_like_a_tag_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p2pnet.shtech_a").write_bytes(b"")
    assert not hub.is_published("p2pnet.shtech_a") and hub.is_published("csrnet.shtech_b")
