"""Regenerate the navigation of the notebook series - idempotently.

    python tools/nav.py            rewrite what is out of date, list the notebooks changed
    python tools/nav.py --check    change nothing; exit 1 if anything would change

What it writes (markdown sources only: outputs are untouched, so no notebook needs to be
re-executed after it runs):

* In every notebook, each markdown cell whose first line is `<!-- jobq-nav -->` gets, as its
  second line, the navigation line

      [← 03 — Title](03-....ipynb) · [Index](00-index.ipynb) · [05 — Title →](05-....ipynb)

  (no "←" link on the first notebook of the series, no "→" link on the last). The rest of
  the cell - the title and the prose after it - is kept as it is.
* In 00-index.ipynb, the lines between `<!-- jobq-index:start -->` and
  `<!-- jobq-index:end -->` become a numbered list: one link per notebook 01..NN, with its
  title and a one-line summary.

Where titles and summaries come from: a notebook's title is its first `# ` heading, without
a leading number ("# 3. CPU-bound work" -> "CPU-bound work"). Its summary is the text of a
`<!-- jobq-summary: ... -->` comment if it has one, else the first paragraph after the
title, joined into one line and cut after the last whole sentence that fits in
SUMMARY_CHARS characters (always at least one sentence).

The series is every `NN-name.ipynb` in notebooks/; 00 is the index, 01.. are the chapters.
Notebooks are read and written with nbformat, and written only when a source changed, so a
second run changes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

NAV_MARKER = "<!-- jobq-nav -->"
INDEX_START = "<!-- jobq-index:start -->"
INDEX_END = "<!-- jobq-index:end -->"
INDEX_NAME = "00-index.ipynb"
NOTEBOOK_NAME = re.compile(r"^(\d\d)-[a-z0-9]+(?:-[a-z0-9]+)*\.ipynb$")
SUMMARY_COMMENT = re.compile(r"<!--\s*jobq-summary:\s*(.*?)\s*-->", re.DOTALL)
TITLE_NUMBER = re.compile(r"^\s*(?:\d+\s*[.:)—–-]\s*)")  # "3. ", "03 — ", "3) "

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Entry:
    """One notebook of the series, as the navigation sees it."""

    path: Path
    number: str  # "03"
    title: str  # "CPU-bound work"
    summary: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        return f"{self.number} — {self.title}"


def series(directory: Path) -> list[Path]:
    """The notebooks of the series, in order: every NN-name.ipynb in `directory`."""
    return sorted(p for p in directory.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


def _markdown_sources(nb: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "markdown"]


def title_of(nb: nbformat.NotebookNode, fallback: str) -> str:
    for source in _markdown_sources(nb):
        for line in source.splitlines():
            if line.startswith("# "):
                title = TITLE_NUMBER.sub("", line[2:].strip(), count=1).strip()
                return title or line[2:].strip()
    return fallback


def _clean(text: str) -> str:
    return " ".join(text.split())


SUMMARY_CHARS = 200
# A sentence ends at ". ", "! " or "? " before a capital, a backtick or markup; not inside
# "e.g. x", where a lower-case word follows.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*_\[])")


def _shorten(paragraph: str) -> str:
    text = _clean(paragraph)
    cut = None
    for match in SENTENCE_END.finditer(text):
        if match.start() > SUMMARY_CHARS:
            break
        cut = match.start()
    if len(text) <= SUMMARY_CHARS:
        return text
    if cut is None:  # the first sentence is already too long: keep it whole
        first = SENTENCE_END.search(text)
        return text[: first.start()] if first else text
    return text[:cut]


def summary_of(nb: nbformat.NotebookNode) -> str:
    sources = _markdown_sources(nb)
    for source in sources:
        found = SUMMARY_COMMENT.search(source)
        if found:
            return _clean(found.group(1))
    # The first paragraph after the title: skip blank lines, HTML comments and headings.
    after_title = False
    paragraph: list[str] = []
    for source in sources:
        for line in source.splitlines():
            stripped = line.strip()
            if not after_title:
                after_title = line.startswith("# ")
                continue
            if paragraph:
                if not stripped or stripped.startswith(("#", "<!--")):
                    return _shorten(" ".join(paragraph))
                paragraph.append(stripped)
            elif stripped and not stripped.startswith(("#", "<!--")):
                paragraph.append(stripped)
        if paragraph:  # a paragraph also ends with its cell
            return _shorten(" ".join(paragraph))
    return ""


def entry(path: Path) -> Entry:
    nb = nbformat.read(path, as_version=4)
    match = NOTEBOOK_NAME.match(path.name)
    assert match is not None
    return Entry(path, match.group(1), title_of(nb, path.stem), summary_of(nb))


def nav_line(entries: list[Entry], i: int) -> str:
    """The navigation line of entries[i]: previous chapter · Index · next chapter.

    The chapters are the notebooks after the index (01, 02, ...); the index itself links
    forward to the first chapter only.
    """
    chapters = [e for e in entries if e.name != INDEX_NAME]
    me = entries[i]
    parts: list[str] = []
    if me.name == INDEX_NAME:
        prev, nxt = None, (chapters[0] if chapters else None)
    else:
        k = chapters.index(me)
        prev = chapters[k - 1] if k > 0 else None
        nxt = chapters[k + 1] if k + 1 < len(chapters) else None
    if prev is not None:
        parts.append(f"[← {prev.label}]({prev.name})")
    parts.append(f"[Index]({INDEX_NAME})")
    if nxt is not None:
        parts.append(f"[{nxt.label} →]({nxt.name})")
    return " · ".join(parts)


def _is_nav_line(line: str) -> bool:
    """Is `line` (the one after the marker) an old navigation line, to be replaced?"""
    stripped = line.strip()
    return stripped.startswith("[") and ".ipynb)" in stripped


def with_nav(source: str, line: str) -> str:
    lines = source.split("\n")
    if len(lines) > 1 and _is_nav_line(lines[1]):
        lines[1] = line
    else:
        lines.insert(1, line)
    return "\n".join(lines)


def index_block(entries: list[Entry]) -> str:
    items = []
    for e in entries:
        if e.name == INDEX_NAME:
            continue
        summary = f" — {e.summary}" if e.summary else ""
        items.append(f"{int(e.number)}. [{e.title}]({e.name}){summary}")
    return "\n".join(items)


def with_index(source: str, block: str) -> str:
    start = source.find(INDEX_START)
    end = source.find(INDEX_END, start + len(INDEX_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        return source
    head = source[: start + len(INDEX_START)]
    return f"{head}\n{block}\n{source[end:]}"


def regenerate(directory: Path, *, write: bool) -> list[Path]:
    """Bring every notebook's navigation up to date; return the notebooks that changed.

    With write=False nothing is written: the result says what *would* change.
    """
    paths = series(directory)
    entries = [entry(p) for p in paths]
    block = index_block(entries)
    changed: list[Path] = []
    for i, path in enumerate(paths):
        nb = nbformat.read(path, as_version=4)
        line = nav_line(entries, i)
        dirty = False
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            new = cell.source
            if new.split("\n", 1)[0].strip() == NAV_MARKER:
                new = with_nav(new, line)
            if path.name == INDEX_NAME:
                new = with_index(new, block)
            if new != cell.source:
                cell.source = new
                dirty = True
        if dirty:
            changed.append(path)
            if write:
                nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if any notebook would change")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="the notebooks directory (default: notebooks/ of this repository)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"nav: no such directory: {args.dir}", file=sys.stderr)
        return 2
    changed = regenerate(args.dir, write=not args.check)
    for path in changed:
        verb = "would change" if args.check else "updated"
        print(f"nav: {verb} {path.name}")
    if args.check and changed:
        print("nav: navigation is out of date; run `python tools/nav.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
