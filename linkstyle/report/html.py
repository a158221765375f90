"""One self-contained HTML page: sections of text, key numbers, tables and embedded figures.

The page has no external reference of any kind (figures are data URIs, the style sheet and
the few lines of script are inline), so it can be mailed, opened from a DVC remote or
archived as one file. It is byte-stable: the same inputs give the same page.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Optional, Sequence

__all__ = ["Figure", "Number", "Table", "Section", "Page", "render_page", "png_data_uri"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Figure:
    """A PNG (its bytes) with a caption that says what to look for."""
    png: bytes
    caption: str
    alt: str


@dataclass(frozen=True)
class Number:
    """One key number: a label, the value as shown, and a hint of how to read it."""
    label: str
    value: str
    hint: str = ""


@dataclass(frozen=True)
class Table:
    """A table; `row_ids` (optional) give each row an anchor, e.g. unit-17."""
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    row_ids: Optional[Sequence[str]] = None
    searchable: bool = False


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    intro: str
    numbers: Sequence[Number] = field(default_factory=tuple)
    figures: Sequence[Figure] = field(default_factory=tuple)
    tables: Sequence[Table] = field(default_factory=tuple)
    code: str = ""  # preformatted text (params, provenance)


@dataclass(frozen=True)
class Page:
    title: str
    subtitle: str
    sections: Sequence[Section]


def png_data_uri(png: bytes) -> str:
    if not png.startswith(PNG_MAGIC):
        raise ValueError("png_data_uri: not a PNG")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_CSS = """
:root { --ink: #1d232b; --muted: #5b6673; --rule: #dde3ea; --accent: #2f6fb2; --card: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); }
nav { position: fixed; top: 0; left: 0; width: 15rem; height: 100vh; overflow-y: auto;
      padding: 1.5rem 1rem; border-right: 1px solid var(--rule); background: #fbfcfd; }
nav a { display: block; color: var(--muted); text-decoration: none; padding: .2rem 0; font-size: .92rem; }
nav a:hover { color: var(--accent); }
nav input { width: 100%; margin-top: 1rem; padding: .35rem .5rem; font: inherit; font-size: .9rem;
            border: 1px solid var(--rule); border-radius: 4px; }
main { margin-left: 15rem; max-width: 62rem; padding: 2rem 2.5rem 5rem; }
h1 { margin: 0 0 .3rem; font-size: 1.9rem; }
.subtitle { color: var(--muted); margin-bottom: 2rem; }
section { border-top: 1px solid var(--rule); padding-top: 1.2rem; margin-top: 2.2rem; }
h2 { font-size: 1.4rem; margin: 0 0 .6rem; }
.numbers { display: grid; grid-template-columns: repeat(auto-fill, minmax(12rem, 1fr)); gap: .7rem; margin: 1rem 0; }
.number { background: var(--card); border-radius: 6px; padding: .6rem .8rem; }
.number .value { font-size: 1.35rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.number .label { font-size: .85rem; color: var(--muted); }
.number .hint { font-size: .78rem; color: var(--muted); margin-top: .2rem; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); image-rendering: auto; }
figcaption { color: var(--muted); font-size: .92rem; margin-top: .3rem; }
table { border-collapse: collapse; font-size: .85rem; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--rule); padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: var(--card); position: sticky; top: 0; }
.scroll { max-height: 26rem; overflow-y: auto; border: 1px solid var(--rule); }
.scroll table { margin: 0; width: 100%; }
tr:target { background: #fff3c4; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: .3rem; }
pre { background: var(--card); padding: .8rem; font-size: .8rem; overflow-x: auto; border-radius: 6px; }
"""

# Typing a unit id in the box jumps to its row in the unit table.
_SCRIPT = """
document.getElementById('find-unit').addEventListener('change', function (e) {
  var id = 'unit-' + String(e.target.value).trim();
  var row = document.getElementById(id);
  e.target.style.borderColor = row ? '' : '#c0392b';
  if (row) { location.hash = id; }
});
"""


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _numbers(numbers: Sequence[Number]) -> str:
    if not numbers:
        return ""
    cards = "".join(
        f'<div class="number"><div class="value">{_e(n.value)}</div><div class="label">{_e(n.label)}</div>'
        + (f'<div class="hint">{_e(n.hint)}</div>' if n.hint else "") + "</div>"
        for n in numbers)
    return f'<div class="numbers">{cards}</div>'


def _figure(fig: Figure) -> str:
    return (f'<figure><img src="{png_data_uri(fig.png)}" alt="{_e(fig.alt)}">'
            f"<figcaption>{_e(fig.caption)}</figcaption></figure>")


def _table(t: Table) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in t.columns)
    ids = t.row_ids or [None] * len(t.rows)
    body = "".join(
        (f'<tr id="{_e(i)}">' if i else "<tr>") + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
        for i, row in zip(ids, t.rows))
    cap = f"<caption>{_e(t.caption)}</caption>" if t.caption else ""
    table = f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>' if len(t.rows) > 15 else table


def _section(s: Section, number: int) -> str:
    parts = [f'<section id="{_e(s.id)}"><h2>{number}. {_e(s.title)}</h2>', f"<p>{_e(s.intro)}</p>",
             _numbers(s.numbers), *map(_figure, s.figures), *map(_table, s.tables)]
    if s.code:
        parts.append(f"<pre>{_e(s.code)}</pre>")
    parts.append("</section>")
    return "".join(parts)


def render_page(page: Page) -> str:
    """The page as one HTML string."""
    ids = [s.id for s in page.sections]
    if len(set(ids)) != len(ids):
        raise ValueError(f"render_page: duplicate section ids in {ids}")
    nav = "".join(f'<a href="#{_e(s.id)}">{i}. {_e(s.title)}</a>' for i, s in enumerate(page.sections, 1))
    searchable = any(t.searchable for s in page.sections for t in s.tables)
    finder = ('<input id="find-unit" type="search" placeholder="find unit id" aria-label="find unit id">'
              if searchable else "")
    out = io.StringIO()
    out.write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
              '<meta name="viewport" content="width=device-width, initial-scale=1">'
              f"<title>{_e(page.title)}</title><style>{_CSS}</style></head><body>")
    out.write(f"<nav><strong>{_e(page.title)}</strong>{nav}{finder}</nav><main>")
    out.write(f'<h1>{_e(page.title)}</h1><div class="subtitle">{_e(page.subtitle)}</div>')
    for i, s in enumerate(page.sections, 1):
        out.write(_section(s, i))
    out.write("</main>")
    if searchable:
        out.write(f"<script>{_SCRIPT}</script>")
    out.write("</body></html>\n")
    return out.getvalue()
