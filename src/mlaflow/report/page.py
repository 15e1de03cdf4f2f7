"""reports/report_page.html: report.md as one self-contained HTML page (its figures embedded as data URIs).

`snakemake --report` shows this page as the "Report" result, so the tables of report.md (which are not files
of their own) are in the workflow's HTML report too. Markdown is rendered with markdown-it-py (CommonMark plus
GitHub tables); raw HTML in the markdown is not passed through.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from markdown_it import MarkdownIt

from mlaflow.errors import InputError

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def _embed_images(tokens, base_dir: Path) -> None:
    """Every image source, relative to `base_dir`, replaced by its PNG as a data URI; a missing figure is an
    error naming it (a page with a broken image would look complete)."""
    for token in tokens:
        for child in token.children or []:
            if child.type != "image":
                continue
            source = child.attrGet("src")
            if source.startswith("data:"):
                continue
            path = base_dir / source
            if not path.is_file():
                raise InputError(path, "figure referenced by report.md not found", "re-run the report job")
            child.attrSet("src", "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode())


def render_page(markdown_text: str, base_dir: Path, title: str = "mlaflow report") -> str:
    """The HTML page of `markdown_text`, with the figures it references (paths relative to `base_dir`)."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(markdown_text)
    _embed_images(tokens, Path(base_dir))
    body = parser.renderer.render(tokens, parser.options, {})
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
