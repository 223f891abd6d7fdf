"""A self-contained HTML page: inline CSS, figures as base64 PNG, no network, no external files."""

from __future__ import annotations

import base64
import html
import struct

import pandas as pd

__all__ = ["html_table", "html_figure", "html_page", "png_size"]

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; background: #fff; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 40px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 22px 0 6px; }
.meta { color: #555; margin: 0 0 14px; }
nav { background: #f6f7f9; border: 1px solid #e3e5e8; border-radius: 6px; padding: 8px 14px; margin: 16px 0;
      display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav a { color: #0a5ea8; text-decoration: none; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
figure.cm-figure { margin: 8px 0 6px; }
figure.cm-figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: #333; font-size: .92em; margin-top: 6px; }
ul.cm-notes { margin: 6px 0 0; padding-left: 20px; font-size: .93em; }
ul.cm-notes li { margin: 3px 0; }
.cm-tablewrap { overflow-x: auto; }
table.cm-table { border-collapse: collapse; margin: 8px 0; font-size: .9em; font-variant-numeric: tabular-nums; }
table.cm-table { min-width: 520px; }
table.cm-table caption { caption-side: top; text-align: left; color: #333; padding-bottom: 6px; max-width: 900px; }
table.cm-table th, table.cm-table td { padding: 4px 10px; border-bottom: 1px solid #e6e6e6; text-align: left;
  white-space: nowrap; }
table.cm-table thead th { border-bottom: 2px solid #999; background: #fafafa; }
table.cm-table tbody tr:hover { background: #f3f7fb; }
pre { background: #f6f7f9; border: 1px solid #e3e5e8; border-radius: 6px; padding: 10px 12px; overflow-x: auto;
      font-size: .85em; max-height: 420px; }
.note { color: #8a4b00; }
footer { margin-top: 48px; color: #666; font-size: .88em; border-top: 1px solid #ddd; padding-top: 10px; }
@media print { nav { display: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""

# Self-check, run on load: every figure's image decoded with a non-zero size and laid out visibly, every
# table laid out with at least one body row. The verdict goes into <body data-render-check="..."> so a
# headless browser (the test suite's Chromium) can read it from the serialised DOM.
_CHECK = """
window.addEventListener("load", function () {
  var bad = [];
  function shown(el) { var r = el.getBoundingClientRect(); var s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none"; }
  var figs = document.querySelectorAll("figure.cm-figure");
  figs.forEach(function (f) {
    var img = f.querySelector("img, svg");
    var ok = img && shown(img) && (img.tagName.toLowerCase() === "svg" ||
             (img.complete && img.naturalWidth > 0 && img.naturalHeight > 0));
    if (!ok) bad.push(f.id);
  });
  var tables = document.querySelectorAll("table.cm-table");
  tables.forEach(function (t) {
    if (!(shown(t) && t.tBodies.length && t.tBodies[0].rows.length > 0)) bad.push(t.id);
  });
  document.body.setAttribute("data-render-check", bad.length ? "fail: " + bad.join(" ") :
    "ok: " + figs.length + " figures, " + tables.length + " tables");
});
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def html_table(df: pd.DataFrame, *, table_id: str, caption: str = "") -> str:
    """A ``<table class="cm-table">`` of the frame's (already formatted) cells; the index is dropped."""
    head = "".join(f"<th scope=\"col\">{esc(c)}</th>" for c in df.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{esc('' if pd.isna(v) else v)}</td>" for v in row) + "</tr>"
                     for row in df.itertuples(index=False))
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="cm-tablewrap"><table class="cm-table" id="{esc(table_id)}">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>")


def html_figure(name: str, png: bytes, *, title: str, caption: str, notes: list[tuple[str, str]],
                files: list[str], scale: float = 0.65) -> str:
    """A figure section: the PNG inline (base64), its caption and one note per panel.

    ``scale``: CSS pixels per image pixel (0.65 = 130 CSS px per inch for the report's 200 dpi figures).
    """
    w, h = png_size(png)
    # The PNG is 200 dpi; at 130 CSS px per inch (1.35x its printed size) 8 pt figure text reads like the
    # page's own small print, and a high-DPI screen still gets more pixels than it shows.
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    items = "".join(f"<li><b>{esc(t)}</b>: {esc(x)}</li>" for t, x in notes)
    links = ", ".join(esc(f) for f in files)
    return (f'<section id="sec-{esc(name)}"><h2>{esc(title)}</h2>'
            f'<figure class="cm-figure" id="{esc(name)}"><img alt="{esc(title)}" src="{src}" '
            f'width="{round(w * scale)}" '
            f'height="{round(h * scale)}"><figcaption>{esc(caption)}'
            + (f" Files: {links}." if links else "") + "</figcaption></figure>"
            + (f'<ul class="cm-notes">{items}</ul>' if items else "") + "</section>")


def html_page(*, title: str, meta: str, summary: list[str], sections: list[tuple[str, str, str]],
              footer: str) -> str:
    """The whole page; ``sections`` are (anchor id, navigation label, HTML body)."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label, _ in sections)
    summ = "".join(f"<li>{esc(s)}</li>" for s in summary)
    body = "\n".join(b for _, _, b in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="critmass">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{esc(title)}</h1><p class="meta">{esc(meta)}</p><ul>{summ}</ul></header>
<nav>{nav}</nav>
<main>
{body}
</main>
<footer>{footer}</footer>
<script>{_CHECK}</script>
</body>
</html>
"""
