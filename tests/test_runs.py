"""Nothing a user made is lost: concurrent result rows, re-run training folders, checkpoint sizes."""

from __future__ import annotations

import multiprocessing

import pandas as pd

from zoo.csvrows import append_rows

COLUMNS = ["writer", "row", "note"]


def append_one_by_one(path, writer: int, n: int, start) -> None:
    start.wait()  # every writer begins together, so their appends overlap
    for row in range(n):
        append_rows(path, [{"writer": writer, "row": row, "note": "a, quoted \"cell\""}], COLUMNS,
                    schema="test", remedy="none")


def test_concurrent_appends_keep_every_row(tmp_path):
    path = tmp_path / "rows.csv"
    writers, n = 4, 50
    context = multiprocessing.get_context("fork")  # the children need no fresh interpreter: starts in milliseconds
    start = context.Barrier(writers)
    processes = [context.Process(target=append_one_by_one, args=(path, w, n, start)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * writers
    table = pd.read_csv(path)
    assert list(table.columns) == COLUMNS
    assert len(table) == writers * n
    assert sorted(zip(table["writer"], table["row"], strict=True)) == [(w, r) for w in range(writers) for r in range(n)]
    assert (table["note"] == 'a, quoted "cell"').all()
