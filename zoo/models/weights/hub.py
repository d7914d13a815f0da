"""Published weights by name, as timm's tags: `p2pnet.shtech_a` is the official P2PNet file trained on ShanghaiTech A.

Each entry says where the file is published, the registered model it converts into (zoo.models.weights.convert
reads its layout), its license, the accuracy its authors report and where, and its hash where one is known. A
file is downloaded only when a user names its tag: to a temporary file beside its place in the cache, checked,
then renamed, so that a wrong hash or an interrupted download leaves nothing behind. The cache is $ZOO_CACHE, else
~/.cache/crowd-zoo: `published/` holds the files as published, `converted/` the zoo checkpoints made from them
(zoo.models.weights.checkpoint writes those). Where no hash is published, the sha256 of the first download is
recorded beside the file (`<file>.sha256`) and every later copy is checked against it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write, sha256

TIMEOUT_S = 60  # per blocking network operation, not for the whole download
CHUNK = 1 << 20


@dataclass(frozen=True)
class Published:
    """One published weights file."""

    tag: str  # "<model>.<training data>"
    model: str  # the registered model it converts into
    url: str
    file: str  # its name in the cache
    layout: str  # what the file holds, as zoo.models.weights.convert recognizes it
    license: str
    reported: str  # the accuracy its authors report
    reported_in: str  # where they report it
    digest: str | None  # "git-blob-sha1:<hex>" or "sha256:<hex>"; None where none is published

    @property
    def source(self) -> dict:
        """What a converted checkpoint's `source` record adds about this file."""
        return {"tag": self.tag, "url": self.url, "license": self.license, "reported": self.reported,
                "reported_in": self.reported_in, "digest": self.digest}


_P2PNET = "https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet"
_LWCC = "https://github.com/tersekmatija/lwcc_weights/releases/download/v0.1"
_LWCC_LICENSE = "MIT (lwcc); the weights inherit CSRNet-pytorch's terms"

PUBLISHED: dict[str, Published] = {p.tag: p for p in (
    Published("p2pnet.shtech_a", "p2pnet",
              "https://raw.githubusercontent.com/TencentYoutuResearch/CrowdCounting-P2PNet/main/weights/SHTechA.pth",
              "SHTechA.pth", "official P2PNet, VGG-16-BN trunk, {'model': state dict}",
              "Tencent P2PNet license: academic research only", "MAE 51.96 on ShanghaiTech A test",
              f"{_P2PNET} README.md, Testing", "git-blob-sha1:e22d01a7e29cbb6db61af5211b8b1a00cdcf7e71"),
    Published("csrnet.shtech_a", "csrnet", f"{_LWCC}/CSRNet_SHA.pth", "CSRNet_SHA.pth",
              "CSRNet-pytorch's network, {'model': state dict}", _LWCC_LICENSE,
              "MAE 75.44, MSE 113.55 on ShanghaiTech A test", "https://github.com/tersekmatija/lwcc README.md, Models",
              None),
    Published("csrnet.shtech_b", "csrnet", f"{_LWCC}/CSRNet_SHB.pth", "CSRNet_SHB.pth",
              "CSRNet-pytorch's network, {'model': state dict}", _LWCC_LICENSE,
              "MAE 11.27, MSE 19.32 on ShanghaiTech B test", "https://github.com/tersekmatija/lwcc README.md, Models",
              None),
)}


def cache_root() -> Path:
    """$ZOO_CACHE, else ~/.cache/crowd-zoo."""
    return Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "crowd-zoo")


def is_published(name) -> bool:
    """Whether `name` (a string or path) is a published tag rather than a file: a known tag no file is named."""
    return isinstance(name, str | os.PathLike) and str(name) in PUBLISHED and not Path(name).exists()


def get_published(tag: str) -> Published:
    if tag not in PUBLISHED:
        raise ZooError(f"unknown published weights {tag!r}; known: {', '.join(PUBLISHED)}")
    return PUBLISHED[tag]


def split_tag(name: str) -> tuple[str, str | None]:
    """`model.tag` -> (model, the published tag); a bare model name -> (name, None)."""
    if name in PUBLISHED:
        return PUBLISHED[name].model, name
    if "." in name and name.split(".", 1)[0] and any(p.model == name.split(".", 1)[0] for p in PUBLISHED.values()):
        raise ZooError(f"unknown published weights {name!r}; known: {', '.join(PUBLISHED)}")
    return name, None


def published_file(entry: Published) -> Path:
    return cache_root() / "published" / entry.file


def converted_file(entry: Published) -> Path:
    return cache_root() / "converted" / f"{entry.tag}.pt"


def fetch(entry: Published, timeout: float = TIMEOUT_S) -> Path:
    """The published file in the cache, checked against its hash; downloaded when absent."""
    path = published_file(entry)
    if path.is_file():
        check_file(entry, path)
        return path
    print(f"downloading {entry.tag} from {entry.url} to {path}", file=sys.stderr)
    atomic_write(path, lambda tmp: _download(entry, Path(tmp), timeout))
    if entry.digest is None:
        recorded = _recorded(path)
        if not recorded.is_file():  # the first download: later copies must match it
            atomic_write(recorded, lambda tmp: Path(tmp).write_text(file_digest(path, "sha256") + "\n"))
    return path


def check_file(entry: Published, path: Path) -> None:
    """A copy already in the cache (downloaded, or put there by hand) must have the published or recorded hash."""
    expected = entry.digest
    if expected is None and _recorded(path).is_file():
        expected = "sha256:" + _recorded(path).read_text().strip()
    if expected is not None:
        algorithm, value = expected.split(":", 1)
        found = file_digest(path, algorithm)
        if found != value:
            raise ZooError(f"{path}: {algorithm} {found}, expected {value} for {entry.tag}; delete it and fetch "
                           f"{entry.url} again")


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file: `sha256`, or `git-blob-sha1` (SHA-1 of b"blob <size>\\0" + content, git's id)."""
    if algorithm == "sha256":
        return sha256(path)
    if algorithm == "git-blob-sha1":
        hasher = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        raise ZooError(f"{path}: unknown hash algorithm {algorithm!r}")
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _download(entry: Published, tmp: Path, timeout: float) -> None:
    """Write the file at entry.url into `tmp` and check it; any failure raises (atomic_write removes `tmp`)."""
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
    except (urllib.error.URLError, OSError) as exc:  # offline, refused, timed out, or cut off
        reason = getattr(exc, "reason", None) or exc
        raise ZooError(f"{entry.tag}: cannot download {entry.url} ({reason}); fetch it by hand into "
                       f"{published_file(entry)} (or run `zoo convert FILE --model {entry.model} --out OUT.pt` and "
                       "use --weights OUT.pt)") from None
    if expected is not None and received != int(expected):
        raise ZooError(f"{entry.tag}: download of {entry.url} cut off after {received} of {expected} bytes; nothing "
                       "was kept, run the command again")
    if entry.digest is not None:
        algorithm, value = entry.digest.split(":", 1)
        found = file_digest(tmp, algorithm)
        if found != value:
            raise ZooError(f"{entry.tag}: {entry.url} has {algorithm} {found}, expected {value}; refused, nothing "
                           "was kept")


def _recorded(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
