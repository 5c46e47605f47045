"""mkdocs hook (mkdocs.yml `hooks:`): the CLI page as the terminal help reads.

- A usage line such as `[--demos FILE...] [--rollouts N]` reads as a Markdown reference link,
  which mkdocs-autorefs would report as an unresolved cross-reference (a warning, so `--strict`
  fails): the brackets are kept literal.
- A paragraph of usage lines (click's `\b` block, one `rpd ...` command per line) stays one
  command per line, as a code block.
- An option without a default shows a dash, not click's internal `Sentinel.UNSET`.
"""

from __future__ import annotations

import html as _html
import re

_USAGE_LINES = re.compile(r"<p>(rpd [^<]*\n[^<]*)</p>")
_UNSET = re.compile(r"<code>Sentinel\.UNSET</code>")
_AUTOREF = re.compile(r'<autoref\b[^>]*\bidentifier="([^"]*)"[^>]*>(.*?)</autoref>', re.S)


def on_page_content(html: str, page, **_: object) -> str:
    if page.file.src_path != "reference/cli.md":
        return html
    def literal(m: re.Match[str]) -> str:
        return f"[{m.group(2)}] [{_html.escape(_html.unescape(m.group(1)))}]"

    html = _AUTOREF.sub(literal, html)
    html = _USAGE_LINES.sub(lambda m: f"<pre><code>{m.group(1)}</code></pre>", html)
    return _UNSET.sub("&mdash;", html)
