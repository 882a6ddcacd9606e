"""Everything pyimage shows a person or a program: results on stdout, progress and notes on stderr, tables,
sizes, and the ``--json`` documents.

Streams: a result (``wrote …``, a table, a JSON document) goes to stdout, so ``pyimage plan | less`` and
``pyimage inspect … > f`` capture it; progress (``[ 1.23s] layer app: built …``), notes, errors and hints go to
stderr. With ``--json``, stdout holds exactly one JSON object and progress still goes to stderr (as with
``docker buildx build --metadata-file``: a person watching a CI log sees the build move; a program reads stdout).

Every ``--json`` document carries ``"version": JSON_VERSION``; a field is only ever added under one version,
and a change that could break a reader (a field renamed, removed or retyped) bumps it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Any, Callable, Sequence

__all__ = ["JSON_VERSION", "Events", "err", "events", "human_size", "out", "print_json", "show_build", "render_table", "show_plan", "table"]

JSON_VERSION = 1

Events = Callable[[str], None]


def err(text: str) -> None:
    """A progress, note, error or hint line (stderr)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def out(text: str) -> None:
    """A result line (stdout), as opposed to progress and notes (stderr)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_json(document: dict[str, Any]) -> None:
    """The one JSON object of a ``--json`` run, with the document format's version first."""
    print(json.dumps({"version": JSON_VERSION, **{k: v for k, v in document.items() if k != "version"}}, indent=2))


def events(quiet: bool = False) -> Events:
    """A progress printer: each line on stderr with the seconds since it was made; silent when ``quiet``."""
    start = time.perf_counter()

    def event(line: str) -> None:
        if not quiet:
            err(f"[{time.perf_counter() - start:5.2f}s] {line}")

    return event


def human_size(n: float) -> str:
    """Bytes in SI units, the one spelling everywhere: ``512 B``, ``167.5 kB``, ``1.2 GB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A titled table with named columns on stdout, in a box (heavy header rules, light body rules). Columns share the
    terminal's width (at least 100 columns); a cell too long for its column is wrapped at spaces, or folded, never cut.
    Cells are data (``[tool.pyimage]``, a Next.js ``[id].tsx``), printed as they are."""
    width = max(100, shutil.get_terminal_size((120, 20)).columns)
    sys.stdout.write(render_table(title, header, rows, width))
    sys.stdout.flush()


def render_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> str:
    """The text of ``table``: no line wider than ``width`` cells (East Asian wide characters count two)."""
    cols = len(header)
    cells = [[_clean(c) for c in header], *([_clean(c) for c in row] + [""] * (cols - len(row)) for row in rows)]
    natural = [max(_width(row[i]) for row in cells) for i in range(cols)]
    room = max(cols, width - (3 * cols + 1))  # "│ " before each column, " │" after the last
    widths = list(natural)
    while sum(widths) > room:  # too wide: narrow the widest column, one cell at a time
        i = max(range(cols), key=lambda k: widths[k])
        if widths[i] <= 1:
            break
        widths[i] -= 1
    lines = [title[: max(1, width)]] if title else []

    def rule(left: str, fill: str, mid: str, right: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + right

    def body(row: list[str], bar: str) -> list[str]:
        wrapped = [_wrap(cell, w) for cell, w in zip(row, widths)]
        out = []
        for n in range(max(len(w) for w in wrapped)):
            parts = [(w[n] if n < len(w) else "") for w in wrapped]
            out.append(bar + bar.join(f" {p}{' ' * (w - _width(p))} " for p, w in zip(parts, widths)) + bar)
        return out

    lines.append(rule("┏", "━", "┳", "┓"))
    lines += body(cells[0], "┃")
    lines.append(rule("┡", "━", "╇", "┩"))
    for row in cells[1:]:
        lines += body(row, "│")
    lines.append(rule("└", "─", "┴", "┘"))
    return "".join(line + "\n" for line in lines)


def _clean(cell: str) -> str:
    """One line of printable text: a newline or tab in data would break the box."""
    return "".join(" " if ch in "\t\r\n" or not ch.isprintable() else ch for ch in str(cell))


def _char_width(ch: str) -> int:
    import unicodedata

    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text: str) -> int:
    return len(text) if text.isascii() else sum(_char_width(ch) for ch in text)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells: broken after a space where one is near, else folded."""
    lines: list[str] = []
    while _width(text) > width:
        cut, used = 0, 0
        for ch in text:  # the longest prefix that fits
            w = _char_width(ch)
            if used + w > width:
                break
            used += w
            cut += 1
        space = text.rfind(" ", 0, cut + 1)
        if space > 0:
            lines.append(text[:space].rstrip())
            text = text[space + 1 :].lstrip()
        else:
            lines.append(text[: max(cut, 1)])
            text = text[max(cut, 1) :]
    lines.append(text)
    return lines


def show_build(result: Any, tags: Sequence[str] = ()) -> None:
    """What ``pyimage build`` did, for people: notes (stderr), each image's layers as a table, then each output
    written, loaded or pushed (stdout). ``result`` is a ``pipeline.BuildResult`` (this module imports no stage)."""
    notes, index, images = result.notes, result.index, [image for _plan, image in result.platforms] or [result.image]
    if tags and result.outputs and not result.loaded:
        notes = (*notes, f"-t {tags[0]} named the image in {', '.join(result.outputs)}; add --load to load it into your engine as {tags[0]}, as docker build -t does")
    for note in notes:
        err(f"note: {note}")
    for built in images:
        rows = [
            [l.name, l.digest[7:19], human_size(l.size), "in registry" if l.remote else "cached" if l.cached else "built", ", ".join(l.packages[:4]) + (" …" if len(l.packages) > 4 else "")]
            for l in built.layers
        ]
        # the manifest digest (what `docker pull NAME@` takes and a registry names), always named as such: an engine's
        # image ID (the config's digest) is another number, said on its own line when the image is loaded
        table(f"image {built.digest} ({built.platform} manifest digest)" if index else f"image {built.digest} (manifest digest)", ["layer", "digest", "size", "cache", "packages"], rows)
    if index is not None:
        out(f"image index {index.digest} ({', '.join(str(i.platform) for i in images)})")
    for w in result.outputs:
        if not w.startswith(("docker-daemon:", "podman:")):
            out(f"wrote {w}")
    for item in result.loaded:
        out(f"loaded into {item.engine} ({item.endpoint}) as {', '.join((item.reference, *item.also))}: {item.engine} image ID {item.image_id} ({item.layers_sent} layer(s) sent)")
    for p in result.pushed:
        out(f"pushed {p['reference']}@{p['digest']} ({p['uploaded']} blob(s) uploaded, {p['mounted']} mounted, {p['skipped']} already there)")


def show_plan(document: dict[str, Any]) -> None:
    """``pyimage plan`` for people, rendered from the very document ``--json`` prints (``report.plan_document``):
    a table per platform, its run config, what the platforms share, the notes."""
    plans = document.get("platforms") or [document]
    for plan in plans:
        base, interpreter, *layers = plan["layers"]
        rows = [["base", f"{base['count']} layer(s)", "", base["source"]], ["interpreter", "", "", f"venv {interpreter['venv']} -> {interpreter['python']}"]]
        for layer in layers:
            if "packages" in layer:
                for i, p in enumerate(layer["packages"]):
                    rows.append([layer["name"] if i == 0 else "", f"{p['name']}=={p['version']}", human_size(p["installed_size"]), p["reason"]])
            else:
                rows.append([layer["name"], "", human_size(layer.get("installed_size", 0)), layer["why"]])
        table(f"layer plan for {plan['target']}", ["layer", "package", "installed", "why"], rows)
        for key, value in plan["config"].items():
            out(f"{key}: {json.dumps(value)}")
    if len(plans) > 1:
        out(f"the same on every platform (one blob, built once): {', '.join(document['shared']) or 'no wheel layer'}")
    for note in dict.fromkeys(n for plan in plans for n in plan["notes"]):
        err(f"note: {note}")
