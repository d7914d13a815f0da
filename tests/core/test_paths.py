"""Where the zoo keeps torch.compile's caches: inductor's own variable first, then the user's cache folder."""

from __future__ import annotations

from pathlib import Path

from zoo.core.paths import inductor_cache_dir


def test_torchinductor_cache_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert inductor_cache_dir() == tmp_path / "mine"


def test_xdg_cache_home_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert inductor_cache_dir() == tmp_path / "xdg" / "crowd-zoo" / "inductor"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert inductor_cache_dir() == Path(tmp_path / "home" / ".cache" / "crowd-zoo" / "inductor")
