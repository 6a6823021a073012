"""report.html in a real browser (headless Chromium over the DevTools protocol): every figure
rendered (each plot container holds an SVG with its traces), no console error, no two
annotation boxes overlapping, and a screenshot saved. Skips where Chromium is absent and CI
is not set; fails where CI is set."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from browser import Browser, chromium
from scaling.cli import main
from sweep_fixture import write_sweep

# Per figure: its id, how many SVG trace groups it holds, how many traces plotly was given,
# and the screen boxes of its annotations (labels and subplot titles).
PROBE = """
Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
  id: d.id,
  svgs: d.querySelectorAll('svg.main-svg').length,
  drawn: d.querySelectorAll('.scatterlayer .trace, .contourlayer .contour').length,
  traces: (d._fullData || []).length,
  boxes: Array.from(d.querySelectorAll('g.annotation')).map(a => {
    const r = (a.querySelector('.annotation-text-g') || a).getBoundingClientRect();
    return {text: a.textContent, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
  }),
}))
"""


def overlaps(a: dict, b: dict, tol: float = 0.5) -> bool:
    return a["x0"] + tol < b["x1"] and b["x0"] + tol < a["x1"] and a["y0"] + tol < b["y1"] and b["y0"] + tol < a["y1"]


def test_report_renders_in_chromium(tmp_path, capsys):
    exe = chromium()
    sweep = write_sweep(tmp_path / "sweep")
    out = tmp_path / "report.html"
    assert main(["report", str(sweep), "--bootstrap", "40", "--out", str(out), "--plan", "--params", "20B",
                 "--tokens", "1T", "--inference-tokens", "1T"]) == 0
    t0 = time.time()
    b = Browser(exe)
    try:
        b.open(out.as_uri())
        deadline = time.time() + 60
        while True:   # plotly draws after the load event; wait until every figure holds its traces
            figs = b.eval(PROBE)
            if figs and all(f["svgs"] and f["drawn"] for f in figs) or time.time() > deadline:
                break
            time.sleep(0.2)
        errors = b.console_errors()
        shot = b.screenshot(tmp_path / "report.png")
        # The probe itself sees an overlap where there is one: two labels on one point.
        import plotly.graph_objects as go
        from scaling.figures.page import write_figures
        bad = go.Figure(go.Scatter(x=[1, 2], y=[1, 2]))
        for text in ("first label", "second label"):
            bad.add_annotation(x=1.5, y=1.5, text=text, showarrow=False)
        b.open(write_figures([bad], tmp_path / "overlap.html", "overlap").as_uri())
        time.sleep(0.5)
        probe_check = b.eval(PROBE)
    finally:
        b.close()
    took = time.time() - t0
    assert len(figs) == 8, [f["id"] for f in figs]
    for f in figs:
        assert f["svgs"] >= 1 and f["drawn"] >= 1 and f["traces"] >= 1, f
        # every scatter/contour trace plotly was given became an SVG group
        assert f["drawn"] >= f["traces"] - 1, f
    assert errors == [], errors
    clashes = [(f["id"], a["text"], c["text"]) for f in figs for i, a in enumerate(f["boxes"])
               for c in f["boxes"][i + 1:] if overlaps(a, c)]
    assert clashes == [], clashes
    assert overlaps(*probe_check[0]["boxes"]), probe_check
    famous = next(f for f in figs if f["id"] == "fig-famous-plot")
    assert {"AlexaTM", "this plan"} <= {a["text"] for a in famous["boxes"]}
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 100_000
    keep = os.environ.get("SCALING_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
    print(f"report rendered in Chromium in {took:.1f} s; screenshot {shot}")
