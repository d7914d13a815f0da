"""The generated documents (benchmarks/documents.py): committed as the generator makes them from results/*.csv,
every number and value of their tables recomputed from the CSV cells it names, every CSV column documented, and
the generator's refusals. The tests compare generated text and CSV cells; they never read the prose around them."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from zoo.core.errors import ZooError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the benchmarks/ scripts live beside zoo/

from benchmarks import documents  # noqa: E402
from benchmarks.documents import Header, Number, Text  # noqa: E402

RESULTS = ROOT / "results"


def expected(fragment: Number) -> float:
    """The fragment's value, computed here from the CSV on its own terms."""
    series = pd.read_csv(RESULTS / fragment.file)[fragment.column].iloc[list(fragment.rows)]
    if fragment.reduction == "value":
        assert len(series) == 1
        return float(series.iloc[0])
    return float({"mean": series.mean(), "std": series.std(ddof=1), "count": series.notna().sum(),
                  "max": series.max()}[fragment.reduction])


def test_the_committed_documents_are_what_the_generator_makes_from_the_csvs_now():
    for path, text in documents.generate(ROOT).items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is out of date: run python -m benchmarks.documents"


def test_every_value_in_a_generated_table_is_traced_to_the_csv_cells_it_names():
    tables = documents.build_tables(RESULTS)
    text_cells = {f: pd.read_csv(f, dtype=str, keep_default_na=False) for f in RESULTS.glob("*.csv")}
    checked = 0
    for name, table in tables.items():
        for row in table.rows:
            for fragment in (f for cell in row for f in cell):
                if isinstance(fragment, Number):
                    assert fragment.value == pytest.approx(expected(fragment), rel=1e-12, nan_ok=True), fragment
                    checked += 1
                elif isinstance(fragment, Text):
                    cell = text_cells[RESULTS / fragment.file][fragment.column].iloc[fragment.row]
                    assert cell.startswith(fragment.text) and (fragment.text or not cell), fragment
                elif isinstance(fragment, Header):
                    assert fragment.column in text_cells[RESULTS / fragment.file].columns, fragment
                elif table.kind == "measurements":  # text the generator wrote itself: never a number
                    assert not re.search(r"\d", fragment), (name, fragment)
    assert checked > 100
    # What the documents hold between their markers is exactly those tables, rendered.
    for document, names in documents.DOCUMENTS.items():
        text = (ROOT / document).read_text()
        blocks = documents.read_blocks(text, document)
        assert tuple(blocks) == names
        for block, (start, end) in blocks.items():
            assert text[start:end] == tables[block].render(), (document, block)


def test_every_column_of_every_results_csv_is_documented_once():
    tables = documents.build_tables(RESULTS)
    documented = {}
    for name, (files, _) in documents.COLUMN_MEANINGS.items():
        headers = [f.column for row in tables[name].rows for f in row[0] if isinstance(f, Header)]
        assert len(headers) == len(set(headers)) == len(tables[name].rows)
        written = [file for file in files if (RESULTS / file).is_file()]  # a file no run has written yet: no header
        assert set(headers) == {c for file in written for c in pd.read_csv(RESULTS / file, nrows=0).columns}
        documented |= dict.fromkeys(written)
    assert set(documented) == {p.name for p in RESULTS.glob("*.csv")}


def copy_checkout(tmp_path: Path) -> Path:
    for document in documents.DOCUMENTS:
        (tmp_path / document).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / document, tmp_path / document)
    shutil.copytree(RESULTS, tmp_path / "results", ignore=shutil.ignore_patterns("*.png", "*.md", ".*"))
    return tmp_path


def test_a_new_row_changes_only_its_block_and_check_reports_it_until_regenerated(tmp_path, capsys):
    root = copy_checkout(tmp_path)
    int8 = root / "results" / "int8.csv"
    frame = pd.read_csv(int8)
    frame = pd.concat([frame, frame.iloc[[-1]].assign(mae_int8=12.3456, accepted=False)], ignore_index=True)
    frame.to_csv(int8, index=False)
    before = (root / "docs/results.md").read_text()
    assert documents.main(["--root", str(root), "--check"]) == 1
    assert "docs/results.md: out of date" in capsys.readouterr().out
    assert (root / "docs/results.md").read_text() == before  # --check writes nothing
    assert documents.main(["--root", str(root)]) == 0
    after = (root / "docs/results.md").read_text()
    assert documents.main(["--root", str(root), "--check"]) == 0
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(added) == 1 and "| 12.35 | False |" in added[0]
    assert after.replace(added[0] + "\n", "", 1) == before  # everything else, prose included, as it was
    assert (root / "README.md").read_text() == (ROOT / "README.md").read_text()


def test_a_column_without_a_meaning_or_a_csv_without_a_column_table_stops_the_generator(tmp_path):
    root = copy_checkout(tmp_path)
    tiling = root / "results" / "tiling.csv"
    pd.read_csv(tiling).assign(new_figure=1.0).to_csv(tiling, index=False)
    with pytest.raises(ZooError, match=r"tiling\.csv: column 'new_figure' has no meaning"):
        documents.generate(root)
    assert documents.main(["--root", str(root)]) == 2
    shutil.copy(RESULTS / "tiling.csv", tiling)
    (root / "results" / "extra.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ZooError, match=r"extra\.csv: no table of columns documents it"):
        documents.generate(root)


def test_a_document_whose_markers_do_not_match_the_generator_is_refused(tmp_path):
    root = copy_checkout(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    readme.write_text(text.replace("<!-- generated: headline -->", "<!-- generated: headlines -->"))
    with pytest.raises(ZooError, match="README.md: its generated blocks are fresh-clone, showcase, headlines, speed; "
                       ".* expects fresh-clone, showcase, headline, speed"):
        documents.generate(root)
    readme.write_text(text.replace("<!-- end generated -->", ""))
    with pytest.raises(ZooError, match="'fresh-clone' has no '<!-- end generated -->' line"):
        documents.generate(root)


def test_every_column_the_fair_protocol_writes_has_a_meaning_before_its_first_row():
    from benchmarks import rows

    for name, _, columns in rows.V1_FILES.values():
        files, meanings = documents.COLUMN_MEANINGS["fair-v1-columns"]
        assert name in files
        assert [c for c in columns if c not in meanings and c not in documents.SHARED_MEANINGS] == [], name
