"""Every results table in README.md and docs/ is what `warpgrad report` prints from the results
files committed under results/, and every paper-profile table is what the records in
warpgrad.experiments.papers give (regenerate with `python -m warpgrad.engine.docs_tables README.md docs/*.md`)."""

from __future__ import annotations

from pathlib import Path

from warpgrad.engine.docs_tables import check, find_blocks, render

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_hold_generated_tables():
    blocks = {path.name: len(find_blocks(path.read_text(encoding="utf-8"))) for path in DOCS}
    assert blocks["README.md"] >= 6 and blocks["continual.md"] >= 4, blocks


def test_every_table_in_the_docs_equals_the_report_of_its_committed_results():
    assert check(DOCS, ROOT) == []


def test_a_changed_number_in_a_table_is_caught():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = find_blocks(text)[0]
    content = text[block.start : block.end]
    digit = next(i for i, c in enumerate(content) if c.isdigit())
    changed = content[:digit] + str((int(content[digit]) + 1) % 10) + content[digit + 1 :]
    tampered = text[: block.start] + changed + text[block.end :]
    assert render(tampered, ROOT) == text


def test_experiments_md_has_a_generated_paper_profile_table_for_every_paper_profile():
    from warpgrad.experiments import EXPERIMENTS

    text = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    blocks = [b.args for b in find_blocks(text) if b.kind == "paper-profile"]
    assert blocks == [name for name, e in EXPERIMENTS.items() if "paper" in e.profiles]


def test_a_changed_paper_profile_table_is_caught_and_regenerated():
    import pytest

    from warpgrad.errors import UsageError

    text = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    block = next(b for b in find_blocks(text) if b.args == "omniglot-multishot")
    content = text[block.start : block.end]
    assert "| inner batch size | `batch_size` = 128 | 128 |" in content
    tampered = text[: block.start] + content.replace("= 128 | 128", "= 20 | 128") + text[block.end :]
    assert render(tampered, ROOT) == text
    with pytest.raises(UsageError, match="unknown experiment; allowed: sine"):
        render("<!-- warpgrad paper-profile nope -->\n<!-- end paper-profile -->\n", ROOT)
    with pytest.raises(UsageError, match="has no '<!-- end paper-profile -->'"):
        render("<!-- warpgrad paper-profile sine -->\n<!-- end report -->\n", ROOT)
    with pytest.raises(UsageError, match="expected one experiment name"):
        render("<!-- warpgrad paper-profile -->\n<!-- end paper-profile -->\n", ROOT)
