"""`zoo predict --compile`: when it compiles (auto: videos, cameras and streams on torch; never another runtime)."""

from __future__ import annotations

import pytest

from zoo.cli import build_parser, main
from zoo.cli.options import compiles
from zoo.core.errors import ZooError


def parsed(*flags: str):
    return build_parser().parse_args(["predict", "--weights", "w.pt", "clip.mp4", *flags])


@pytest.mark.parametrize(("flags", "frames", "expected"), [
    ((), True, True),  # the default, auto: a video's frames share one size
    ((), False, False),  # images stay eager: each size would compile again
    (("--compile", "on"), False, True),
    (("--compile", "off"), True, False),
    (("--runtime", "onnxruntime"), True, False),  # auto does nothing on another runtime
    (("--onnx", "m.onnx"), True, False),
])
def test_auto_compiles_same_size_frames_on_torch_only(flags, frames, expected):
    assert compiles(parsed(*flags), same_size_frames=frames) is expected


def test_compile_on_another_runtime_is_refused():
    with pytest.raises(ZooError, match="--runtime openvino"):
        compiles(parsed("--compile", "on", "--runtime", "openvino"), same_size_frames=True)


def test_compile_on_with_onnxruntime_is_one_error_line_before_any_loading(tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    missing = tmp_path / "absent.pt"  # refused before the weights are read
    assert main(["predict", "--weights", str(missing), str(image), "--runtime", "onnxruntime", "--compile",
                 "on"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--compile on" in err and "onnxruntime" in err
