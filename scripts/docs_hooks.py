"""mkdocs hook (mkdocs.yml `hooks:`): the CLI page as the terminal help reads.

- A usage line such as `[--demos FILE...] [--rollouts N]` reads as a Markdown reference link,
  which mkdocs-autorefs would report as an unresolved cross-reference (a warning, so `--strict`
  fails): the brackets are kept literal.
- A paragraph of usage lines (click's `\b` block, one `rpd ...` command per line) stays one
  command per line, as a code block.
- An option without a default shows a dash, not click's internal `Sentinel.UNSET`.

And on every page, a line `<!-- rpd report: ../results/STUDY -->` (the study folder relative to
the page) becomes that study's `report.md`: its tables and plot links, the file the test suite
regenerates from the study's committed runs and compares. So a results page shows the generated
numbers rather than a copy of them. The marker must start its line; one inside an indented code
block is left alone, one inside a fenced block is not (do not put one there).

Likewise a line `<!-- rpd table: PATH.json -->` (relative to the page, e.g.
`../results/benchmarks/NAME.json` from a page in `measured/`) becomes the table of a
benchmark's record (`benchmarks/record.py`: its rows and the columns to publish), followed by
the command, date and machine that measured it.
"""

from __future__ import annotations

import html as _html
import json
import posixpath
import re
from pathlib import Path

_REPORT = re.compile(r"^<!-- rpd report: (\S+) -->$", re.M)
_TABLE = re.compile(r"^<!-- rpd table: (\S+\.json) -->$", re.M)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)/]+\.png)\)")
_USAGE_LINES = re.compile(r"<p>(rpd [^<]*\n[^<]*)</p>")
_UNSET = re.compile(r"<code>Sentinel\.UNSET</code>")
_AUTOREF = re.compile(r'<autoref\b[^>]*\bidentifier="([^"]*)"[^>]*>(.*?)</autoref>', re.S)


def on_page_markdown(markdown: str, page, config, **_: object) -> str:
    def include(m: re.Match[str]) -> str:
        study = m.group(1).rstrip("/")
        page_dir = posixpath.dirname(page.file.src_path)
        folder = posixpath.normpath(posixpath.join(page_dir, study))
        report = Path(config["docs_dir"]) / folder / "report.md"
        if not report.is_file():
            raise ValueError(f"{page.file.src_path}: {report} does not exist; make it with "
                             f"`rpd report $(cat {report.parent}/report-args.txt) --out "
                             f"{report.parent}`")
        lines = report.read_text().splitlines()
        if lines and lines[0].startswith("# "):
            lines = lines[1:]  # the report's own title; the page has one
        text = "\n".join("#" + line if line.startswith("## ") else line for line in lines)
        return _IMAGE.sub(lambda i: f"![{i.group(1)}]({study}/{i.group(2)})", text)

    def table(m: re.Match[str]) -> str:
        page_dir = posixpath.dirname(page.file.src_path)
        path = Path(config["docs_dir"]) / posixpath.normpath(posixpath.join(page_dir,
                                                                            m.group(1)))
        if not path.is_file():
            raise ValueError(f"{page.file.src_path}: {path} does not exist; write it with "
                             f"`bash benchmarks/measure_all.sh` (or the benchmark whose --out "
                             "writes it, benchmarks/README.md)")
        return render_table(json.loads(path.read_text()))

    return _TABLE.sub(table, _REPORT.sub(include, markdown))


def render_table(record: dict) -> str:
    """A benchmark record as a markdown table and the line that says how it was measured."""
    cols = record["columns"]
    lines = ["| " + " | ".join(c["title"] for c in cols) + " |",
             "|" + " --- |" * len(cols)]
    for row in record["rows"]:
        cells = []
        for c in cols:
            value = row.get(c["key"])
            cells.append("" if value is None else c["format"].format(value))
        lines.append("| " + " | ".join(cells) + " |")
    if record.get("measured", True):
        lines += ["", f"Measured {record['date']} on {record['machine']}, Python "
                  f"{record['python']}: `{record['command']}`"]
    else:
        lines += ["", f"Made from the committed files by `{record['command']}`"]
    return "\n".join(lines)


def on_page_content(html: str, page, **_: object) -> str:
    if page.file.src_path != "reference/cli.md":
        return html
    def literal(m: re.Match[str]) -> str:
        return f"[{m.group(2)}] [{_html.escape(_html.unescape(m.group(1)))}]"

    html = _AUTOREF.sub(literal, html)
    html = _USAGE_LINES.sub(lambda m: f"<pre><code>{m.group(1)}</code></pre>", html)
    return _UNSET.sub("&mdash;", html)
