"""HTML pages of figures, plotly.js embedded once and inline (a page opens offline), and
one figure written as HTML, PNG or SVG. Every file is written atomically: a failed write
leaves no partial file."""

from __future__ import annotations

import html
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_bytes

STATIC = (".png", ".svg")
PAGE = (".html", ".htm")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1000px; margin: 2em auto;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: right; }
th { background: #f5f5f5; } td.l, th.l { text-align: left; }
pre { background: #f7f7f7; padding: 0.7em; overflow-x: auto; font-size: 0.78em; line-height: 1.3; }
.warn { color: #8a4b00; } .caption { font-size: 0.9em; color: #444; margin: 0.2em 0 2em; }
.figure { margin: 1em 0 0; } .scroll { max-height: 420px; overflow-y: auto; }
.summary td { text-align: left; }
"""


def plotly_js() -> str:
    """plotly.js itself, inline (the package ships it: no network at report time)."""
    from plotly.offline import get_plotlyjs   # here, not above: plotly loads with the first figure (axes.go)
    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def figure_div(fig, div_id: str) -> str:
    """A figure as an HTML div for a page that carries plotly.js once (`page`)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": False})


def page(title: str, body: str) -> str:
    """A whole HTML document: the house style, plotly.js inline, then `body`."""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style>\n{plotly_js()}\n</head><body>\n{body}\n</body></html>\n")


def check_out(path: str | Path, allowed: tuple[str, ...], flag: str = "--out") -> Path:
    """A writable output path with one of the allowed suffixes, checked before any work."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {p}: is a directory; give a file name ending in {' or '.join(allowed)}")
    if p.suffix.lower() not in allowed:
        raise UserError(f"{flag} {p}: unknown file type {p.suffix or '(no suffix)'}; expected {' or '.join(allowed)}")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {p}: {parent} is a file, not a directory")
            break
    return p


def write_figures(figs: list, path: Path, title: str) -> Path:
    """All figures on one page (the `fit --plots` and `plan --plots` pages)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<div class='figure'>{figure_div(f, f'fig-{i}')}</div>" for i, f in enumerate(figs) if f is not None]
    atomic_write_bytes(Path(path), page(title, "\n".join(body)).encode())
    return Path(path)


def write_figure(fig, path: Path, title: str) -> Path:
    """One figure: a page of its own (.html), or a static image (.png, .svg) through kaleido
    and the system's Chrome or Chromium, offline."""
    path = Path(path)
    if path.suffix.lower() in STATIC:
        data, err = None, None
        # Three tries: on a busy machine kaleido can ask its page for its scope before the page
        # has loaded plotly.js ("kaleido_scopes is not defined"), and a second try succeeds.
        for _ in range(3):
            try:
                data = fig.to_image(format=path.suffix.lower()[1:], width=fig.layout.width, height=fig.layout.height)
                break
            except Exception as e:   # kaleido missing, or no browser for it: name both ways out
                err = e
                if isinstance(e, (ImportError, ValueError)):
                    break
        if data is None:
            e = err
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"{path}: {path.suffix} export needs kaleido (pip install kaleido) and Chrome or "
                            f"Chromium on this machine ({type(e).__name__}: {first}); write .html instead") from None
        atomic_write_bytes(path, data)
        return path
    return write_figures([fig], path, title)


def _png(fig, width: int | None, height: int | None) -> tuple[bytes | None, str | None]:
    """The figure as PNG bytes through kaleido, or None and why not (kaleido missing, no browser)."""
    err = None
    for _ in range(3):      # kaleido's first page load can lose a race on a busy machine (write_figure)
        try:
            return fig.to_image(format="png", width=width or fig.layout.width, height=height or fig.layout.height), None
        except Exception as e:
            err = e
            if isinstance(e, (ImportError, ValueError)):
                break
    return None, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}"


def show(fig, png: bool = True, width: int | None = None, height: int | None = None) -> None:
    """Display a figure in a notebook: the interactive plotly figure and, in the same output, a
    static PNG of it (kaleido and Chrome or Chromium), which is what a page that runs no
    JavaScript shows (a notebook on GitHub). Without kaleido or a browser: the interactive
    figure alone, and a line saying why."""
    import base64

    import plotly.io as pio                    # here, not above: plotly loads with the first figure (axes.go)
    from IPython.display import display        # here: a notebook's, never needed on the command line

    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
    if png:
        data, why = _png(fig, width, height)
        if data is not None:
            bundle["image/png"] = base64.b64encode(data).decode()
        else:
            print(f"(no static image: {why}; pip install kaleido, with Chrome or Chromium, to add one)")
    display(bundle, raw=True)
