"""Result CSVs that only grow (`results/bench.csv`, the comparison CSVs): a new row never costs an old one."""

from __future__ import annotations

import csv
import fcntl
import io
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write


@contextmanager
def exclusive(path: Path):
    """Hold an OS lock on `.NAME.lock` beside `path` (created if absent, left in place: removing it would let a
    waiting process lock a file a newcomer no longer sees). The lock is on a file of its own because the CSV
    itself is replaced by a rename: a lock on its old inode would not stop a process that opened the new one."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes, also when the process dies
        yield


def append_rows(path: Path, rows: Iterable[dict], columns: list[str], *, schema: str, remedy: str) -> None:
    """Append `rows` to the CSV `path` (created with its header if absent), earlier rows kept byte for byte.

    Appends from several processes at once are serialized by a lock beside the file, held from reading the
    header to the rename, so no process writes back a file that misses another's rows. Under the lock the whole
    file is still rewritten beside itself and renamed over it (rather than appended to in place): an interrupted
    run never leaves half a row, and a reader never sees one. A file with another header is refused (appending
    would corrupt it): the error names the `schema` it should have and the `remedy`. Keys outside `columns` are
    dropped and None becomes an empty cell.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(path):
            old = path.read_text() if path.is_file() else ""
            header = next(csv.reader(io.StringIO(old)), None)
            if header is not None and header != columns:
                raise ZooError(f"{path}: its header is not the {schema} schema (docs/results.md); {remedy}")
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            if header is None:
                writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
            if old and not old.endswith("\n"):
                old += "\n"
            atomic_write(path, lambda tmp: Path(tmp).write_text(old + buffer.getvalue()))
    except OSError as error:
        raise ZooError(f"{path}: cannot write ({error.strerror or error})") from None
