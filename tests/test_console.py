"""The tables pyimage prints (console.render_table): bounded width, nothing cut, data shown as it is."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyimage.console import render_table


def _width(line: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in line)


@pytest.mark.parametrize("width", [40, 100, 160])
def test_no_line_is_wider_than_the_terminal_and_no_cell_text_is_lost(width: int) -> None:
    packages = "filelock==4.2.12, fsspec==2026.9.0, jinja2==3.1.6, markupsafe==3.0.4, " + "x" * 90
    text = render_table("image sha256:abc", ["layer", "packages"], [["site-packages", packages], ["app", "日本語パッケージ==1.0"]], width)
    lines = text.splitlines()
    assert lines[0] == "image sha256:abc"
    assert all(_width(line) <= width for line in lines), text
    assert len({_width(line) for line in lines[1:]}) == 1, text  # a closed box: every row as wide as the rules
    # Reading the packages column back, row by row, gives the cell's words in order, with nothing missing.
    column = [line.split("│")[2].strip() for line in lines[4:-1]]
    assert "".join(column).replace(" ", "") == (packages + "日本語パッケージ==1.0").replace(" ", "")


def test_cells_are_data_never_markup_or_layout() -> None:
    text = render_table("[tool.pyimage] [bold]x[/bold]", ["name"], [["pages/[id].tsx"], ["two\nlines\tand a tab"]], 100)
    assert text.splitlines()[0] == "[tool.pyimage] [bold]x[/bold]"
    assert "│ pages/[id].tsx" in text
    assert "two lines and a tab" in text and len(text.splitlines()) == 7  # title, 3 rules, header, 2 rows


def test_a_short_row_is_padded_and_the_header_is_boxed() -> None:
    text = render_table("", ["layer", "digest", "size"], [["base"]], 100)
    header = text.splitlines()[1]
    assert [c.strip() for c in header.strip("┃").split("┃")] == ["layer", "digest", "size"]
    assert text.splitlines()[3].count("│") == 4


def test_printing_a_table_does_not_import_rich() -> None:
    code = "import sys; from pyimage import console; console.table('t', ['a'], [['b']]); assert 'rich' not in sys.modules, sorted(m for m in sys.modules if m.startswith('rich'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
