"""The page around a report: one self-contained HTML file (inline CSS and JS, no fonts, no links
to anything outside the output directory), so it opens offline and can be mailed as it is.

The table script makes every ``table.sortable`` sortable by clicking a header (numbers by their
``data-v`` value, missing values last) and filterable by the text box and call menu that name it
(``data-table``). The address may set the initial state: ``report.html#sort=length&dir=desc&
filter=phage&call=virus``. When it has set up every table it sets ``data-tables-ready`` on
``<body>`` to the number of rows it manages (a browser test reads it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

__all__ = ["page", "key_value_table", "table", "yes_no", "text_or_dash"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5em 2em;
max-width:92em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1em;margin:1.2em 0 .2em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 7px;font-size:13px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none;white-space:nowrap}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
code{font-size:12px;word-break:break-all}.muted{color:#666}
.warn{background:#fde2e2;padding:.8em 1em;font-weight:bold;border:2px solid #c0392b}
.call-virus{color:#c0392b;font-weight:600}.call-non-virus{color:#2c7fb8}.call-no-call{color:#888}
.plots{display:flex;flex-wrap:wrap;gap:1em}.controls{margin:.6em 0}.controls input{width:22em}
svg{background:#fff}svg text{font-size:11px;fill:#333}svg .axis{stroke:#444;stroke-width:1}
.legend span{display:inline-block;margin-right:1.2em}.swatch{display:inline-block;width:.9em;height:.9em;
vertical-align:-.1em;margin-right:.3em}
.track{margin-bottom:.6em}.track p{margin:.1em 0;font-size:13px}
.wide{overflow-x:auto}table.sortable td{white-space:nowrap}table.sortable td.desc{white-space:normal;
min-width:16em;max-width:30em}
"""

_JS = r"""
(function () {
  var params = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    var kv = part.split("=");
    if (kv[0]) { params[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1] || ""); }
  });
  var managed = 0;
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var body = table.tBodies[0], heads = table.tHead.rows[0].cells;
    var rows = Array.prototype.slice.call(body.rows);
    var box = document.querySelector('input[data-table="' + table.id + '"]');
    var menu = document.querySelector('select[data-table="' + table.id + '"]');
    var shown = document.querySelector('[data-shown="' + table.id + '"]');
    function value(row, i, numeric) {
      var cell = row.cells[i], v = cell.getAttribute("data-v");
      if (numeric) { return v === null || v === "" ? NaN : parseFloat(v); }
      return (v !== null ? v : cell.textContent).toLowerCase();
    }
    function sortBy(i, dir) {
      var numeric = heads[i].getAttribute("data-type") === "num";
      rows.sort(function (a, b) {
        var x = value(a, i, numeric), y = value(b, i, numeric);
        if (numeric) {
          if (isNaN(x)) { return isNaN(y) ? 0 : 1; }
          if (isNaN(y)) { return -1; }
          return dir * (x - y);
        }
        return dir * (x < y ? -1 : x > y ? 1 : 0);
      });
      rows.forEach(function (row) { body.appendChild(row); });
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      heads[i].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    }
    function filter() {
      var text = box ? box.value.toLowerCase() : "", call = menu ? menu.value : "", n = 0;
      rows.forEach(function (row) {
        var hit = (!text || row.textContent.toLowerCase().indexOf(text) >= 0) &&
                  (!call || row.getAttribute("data-call") === call);
        row.hidden = !hit;
        if (hit) { n += 1; }
      });
      if (shown) { shown.textContent = String(n); }
    }
    Array.prototype.forEach.call(heads, function (head, i) {
      head.title = "sort";
      head.addEventListener("click", function () {
        sortBy(i, head.getAttribute("aria-sort") === "ascending" ? -1 : 1);
      });
      if (params.sort && head.getAttribute("data-key") === params.sort) {
        sortBy(i, params.dir === "desc" ? -1 : 1);
      }
    });
    if (box) { box.addEventListener("input", filter); if (params.filter) { box.value = params.filter; } }
    if (menu) { menu.addEventListener("change", filter); if (params.call) { menu.value = params.call; } }
    filter();
    managed += rows.length;
  });
  document.body.setAttribute("data-tables-ready", String(managed));
})();
"""


def page(title: str, body: str, *, script: bool = True) -> str:
    """The whole HTML document: ``title`` (escaped here), ``body`` (already HTML)."""
    js = f"<script>{_JS}</script>" if script else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n{js}\n"
        "</body></html>\n"
    )


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def text_or_dash(value: object) -> str:
    """A value for a table cell, escaped: ``None`` as "not set", booleans as yes/no."""
    if value is None:
        return '<span class="muted">not set</span>'
    if isinstance(value, bool):
        return yes_no(value)
    return escape(str(value))


def key_value_table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table; keys are escaped, values are HTML already."""
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A plain table; headers are escaped, cells are HTML already; ``numeric`` columns right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
