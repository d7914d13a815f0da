"""`zoo list` and `zoo data check` as a user runs them: a separate process, its exit status, stdout and stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import assets_path
from support.datasets import BREAKAGES, write_broken_shanghaitech, write_image, write_shanghaitech

from zoo.models.registry import get_entry, list_models


def zoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, timeout=120)


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_check_json_on_a_good_dataset(tmp_path):
    written = write_shanghaitech(tmp_path, {"train": [3, 0, 6], "test": [2]})
    result = zoo("data", "check", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    report = last_json_line(result.stdout)
    counts = [len(p) for p in written.values()]
    assert (report["images"], report["heads"], report["problems"]) == (4, sum(counts), [])
    assert (report["min"], report["max"], report["mean"]) == (0, 6, pytest.approx(sum(counts) / 4))


def test_check_lists_every_problem_and_exits_non_zero(tmp_path):
    expected, good_heads = write_broken_shanghaitech(tmp_path, list(BREAKAGES))
    result = zoo("data", "check", str(tmp_path), "--json")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    report = last_json_line(result.stdout)
    assert len(report["problems"]) == len(expected) and report["heads"] == good_heads
    problem_lines = [line for line in result.stderr.splitlines() if line.startswith("problem ")]
    assert problem_lines == [f"problem {message}" for message in report["problems"]]
    for line, (bad_file, _) in zip(problem_lines, expected, strict=True):
        assert str(bad_file) in line
    assert "JPEG" not in result.stderr.replace("truncated JPEG", "")  # no decoder chatter besides our lines


def test_plain_output_names_problems_too(tmp_path):
    [(bad_file, _)], _ = write_broken_shanghaitech(tmp_path, ["missing annotation"])
    result = zoo("data", "check", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"problem {bad_file}: annotation file missing" in result.stderr.splitlines()


@pytest.mark.parametrize("args, message", [
    (["--format", "shanghai"], "unknown dataset format 'shanghai'"),
    (["--format", "json"], "not a zoo points JSON"),
])
def test_wrong_format_exits_without_traceback(tmp_path, args, message):
    write_shanghaitech(tmp_path, {"train": [1]})
    result = zoo("data", "check", str(tmp_path), *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unusual_paths_are_named_verbatim(tmp_path):
    folder = tmp_path / "crowd[x] [bold]"  # brackets that rich would read as markup
    folder.mkdir()
    result = zoo("data", "check", str(folder))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{folder}: cannot tell the dataset format" in result.stderr
    image = write_image(tmp_path / "photo.jpg")  # an image where a list file belongs
    result = zoo("data", "check", str(image))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{image}: not a UTF-8 text file" in result.stderr


def test_check_json_on_part_b():
    result = zoo("data", "check", str(assets_path("people_counting_custom", "part_B")), "--json")
    assert result.returncode == 0, result.stderr
    report = last_json_line(result.stdout)
    assert (report["images"], report["heads"], report["problems"]) == (38, 623, [])
    assert report["splits"] == {"test": {"images": 8, "heads": 136}, "train": {"images": 30, "heads": 487}}


def test_list_json():
    result = zoo("list", "--json")
    assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)
    # Other test modules register test-only models in this process; the CLI must list exactly the package's.
    packaged = [n for n in list_models() if get_entry(n).module.startswith("zoo.")]
    assert [m["name"] for m in models] == packaged
    for m in models:
        entry = get_entry(m["name"])
        assert (m["family"], m["description"]) == (entry.family, entry.description)
