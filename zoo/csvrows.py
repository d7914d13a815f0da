"""Result CSVs that only grow (`results/bench.csv`, the comparison CSVs): a new row never costs an old one."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from zoo.checkpoint import atomic_write
from zoo.errors import ZooError


def append_rows(path: Path, rows: Iterable[dict], columns: list[str], *, schema: str, remedy: str) -> None:
    """Append `rows` to the CSV `path` (created with its header if absent), earlier rows kept byte for byte.

    The whole file is rewritten beside itself and renamed over it, so an interrupted run never leaves half a row.
    A file with another header is refused (appending would corrupt it): the error names the `schema` it should
    have and the `remedy`. Keys outside `columns` are dropped and None becomes an empty cell.
    """
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    header = next(csv.reader(io.StringIO(old)), None)
    if header is not None and header != columns:
        raise ZooError(f"{path}: its header is not the {schema} schema (results/README.md); {remedy}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if header is None:
        writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    if old and not old.endswith("\n"):
        old += "\n"
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(old + buffer.getvalue()))
    except OSError as error:
        raise ZooError(f"{path}: cannot write ({error.strerror or error})") from None
