"""utils/doc_blocks.py: a tool's block of a docs file is replaced and nothing else; a file without the block's
markers is an error naming them."""
from __future__ import annotations

from pathlib import Path

import pytest

from utils.doc_blocks import DocBlockError, block_names, read_block, write_block

DOC = ("# Title\n\nHand-written text.\n\n<!-- tool:table begin -->\nold line 1\nold line 2\n<!-- tool:table end -->\n"
       "\nMore text.\n<!-- tool:table:second begin -->\n<!-- tool:table:second end -->\n")


def test_writing_a_block_replaces_its_lines_only(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    write_block(doc, "tool:table", "| a | b |\n|---|---|\n")
    assert doc.read_text() == DOC.replace("old line 1\nold line 2\n", "| a | b |\n|---|---|\n")
    assert read_block(doc, "tool:table") == "| a | b |\n|---|---|\n"
    write_block(doc, "tool:table:second", "filled")  # an empty block gets its first content
    assert read_block(doc, "tool:table:second") == "filled\n"
    assert block_names(doc, "tool:table") == ["tool:table", "tool:table:second"]


@pytest.mark.parametrize("text", ["no markers\n", "<!-- tool:table end -->\n<!-- tool:table begin -->\n",
                                  "<!-- tool:table begin -->\nx\n<!-- tool:table end -->\n" * 2])
def test_missing_or_misplaced_markers_are_one_error_line(tmp_path: Path, text: str):
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(DocBlockError) as info:
        write_block(doc, "tool:table", "new")
    assert str(info.value) == (f"{doc}: expected one line '<!-- tool:table begin -->' and, after it, one line "
                               "'<!-- tool:table end -->' around the block to write")
    assert doc.read_text() == text  # nothing written
    with pytest.raises(DocBlockError, match="no such file"):
        read_block(tmp_path / "missing.md", "tool:table")
