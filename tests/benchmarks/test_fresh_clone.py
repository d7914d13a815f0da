"""The fresh-clone timing times what the README says a newcomer runs."""

from __future__ import annotations

from benchmarks import fresh_clone


def test_the_timed_steps_are_the_readmes_first_lines():
    assert fresh_clone.steps_match_readme()


def test_a_readme_whose_first_lines_change_no_longer_matches(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text('# x\n\n```bash\npython3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && '
                      ".venv/bin/zoo train p2pnet\n.venv/bin/pytest\n```\n")
    assert fresh_clone.readme_commands(readme)[-1] == ".venv/bin/pytest"
    assert not fresh_clone.steps_match_readme(readme)
