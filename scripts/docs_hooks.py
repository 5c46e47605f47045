"""mkdocs hook (mkdocs.yml `hooks:`): keep the click help text's literal brackets on the CLI page.

A usage line such as `[--demos FILE...] [--rollouts N]` reads as a Markdown reference link, which
mkdocs-autorefs would report as an unresolved cross-reference (a warning, so `--strict` fails).
"""

from __future__ import annotations

import html as _html
import re

_AUTOREF = re.compile(r'<autoref\b[^>]*\bidentifier="([^"]*)"[^>]*>(.*?)</autoref>', re.S)


def on_page_content(html: str, page, **_: object) -> str:
    if page.file.src_path != "reference/cli.md":
        return html
    def literal(m: re.Match[str]) -> str:
        return f"[{m.group(2)}] [{_html.escape(_html.unescape(m.group(1)))}]"

    return _AUTOREF.sub(literal, html)
