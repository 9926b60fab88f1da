"""The report's standalone HTML pages: one stylesheet, and Markdown (with tables) rendered to a page."""

from __future__ import annotations

import os

from workflow_scripts.lib.atomic_io import write_text

HTML_STYLE = (
    "body{font-family:sans-serif;max-width:75em;margin:1em auto;line-height:1.4}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 8px}"
    "td{font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
)


def write_markdown_page(text: str, title: str, path: str | os.PathLike) -> None:
    """Markdown (with tables) as a standalone HTML page: what the Snakemake report shows inline (browsers only
    download the report's embedded plain-text and CSV files)."""
    import markdown

    body = markdown.markdown(text, extensions=["tables"])
    head = f"<meta charset='utf-8'><title>{title}</title><style>{HTML_STYLE}</style>"
    write_text(f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>\n", path)
