"""`scaling report` and `scaling plot` on a small sweep on disk: what the report holds, that
it reuses the fit and the plan (the same numbers `scaling fit` and `scaling plan` give), the
figures' axes and hover text, and one-line errors that leave no file behind."""

from __future__ import annotations

import json
import re

import pytest

from scaling import figures, report
from scaling.cli import main
from sweep_fixture import write_sweep

PLAN = ["--plan", "--params", "20B", "--tokens", "1T", "--inference-tokens", "1T"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = write_sweep(tmp_path_factory.mktemp("sweep") / "sweep")
    assert main(["fit", str(d / "results.parquet"), "--bootstrap", "60", "--out", str(d / "fit.json"),
                 "--no-progress"]) == 0
    return d


def test_report_is_one_offline_file_with_every_section(sweep, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(sweep), "--out", str(out), *PLAN]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    # plotly.js once, inline; nothing fetched from the network.
    assert page.count("plotly.js v") == 1 and not re.search(r"<script[^>]+src=", page)
    from plotly.offline import get_plotlyjs
    assert not re.search(r"(src|href)=['\"]https?://", page.replace(get_plotlyjs(), ""))
    ids = re.findall(r"id=\"(fig-[a-z]+)-plot\"", page)
    assert ids == [f"fig-{k}" for k in ("curves", "isoflop", "frontier", "contours", "residuals", "heldout",
                                        "famous", "cost")]
    fit = json.loads((sweep / "fit.json").read_text())
    # The fit's own numbers, not a refit: approach 3's alpha and the held-out error as fit.json has them.
    assert f"{fit['approach3']['alpha']:.6g}" in page
    assert f"{100 * fit['holdout_budget']['approach3']['mean_abs_rel_error']:.2f}%" in page
    best = min(fit["holdout_budget"]["approach3"]["runs"], key=lambda r: r["loss"])
    assert f"its lowest loss, {best['run']}: {best['loss']:.4f}" in page
    # Runs table: every row, the failed one marked as not fitted.
    runs = page[page.index("id='runs'"):page.index("id='fits'")]
    assert runs.count("<td class='l'>C1e") == 29 and "failed</td><td class=''>no" in runs
    # The plan section is what `scaling plan` prints for the same arguments.
    main(["plan", *PLAN[1:]])
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.strip().startswith("predicted loss"))
    assert line.strip() in page
    assert "A100" in page and "kg CO2" in page


def test_report_without_fit_json_fits_with_the_fit_code(tmp_path, capsys):
    d = write_sweep(tmp_path / "s", seed=3)
    inp = report.load(d, bootstrap=20)
    assert inp.fit_source.startswith("fitted here") and inp.fit["bootstrap"] == 20
    from scaling.fit import FitOptions, fit_all, find_curves, load_curves, load_runs
    table = load_runs(d / "results.parquet")
    same = fit_all(table, load_curves(find_curves(d / "results.parquet", None), table),
                   FitOptions(n_boot=20, progress=False))
    assert inp.fit["approach3"]["alpha"] == same["approach3"]["alpha"]
    assert inp.plan is None and "No plan in this report" in report.render(inp)


def test_figures_have_readable_log_ticks_and_hover_naming_runs(sweep):
    inp = report.load(sweep, plan_args=PLAN[1:])
    figs = {k: f for k, _, _, f in report.figures_of(inp)}
    assert set(figs) == set(report.KINDS) - {"task"}      # the task law's figure needs task columns (test_task_law.py)
    for kind, fig in figs.items():
        for ax in [a for a in fig.layout if a.startswith(("xaxis", "yaxis"))]:
            axis = fig.layout[ax]
            if axis.type == "log":
                text = list(axis.ticktext)
                assert len(text) >= 2, (kind, ax)
                # one style per axis: counts (10K, 1M, 1B) or FLOPs (1e18), never "10^16" beside "1T"
                assert all(re.fullmatch(r"\d+(\.\d+)?[KMBT]?", t) for t in text) or \
                    all(re.fullmatch(r"\d(\.\d)?e\d+", t) for t in text), (kind, ax, text)
    hover = " ".join(str(t.text) for t in figs["isoflop"].data if t.text is not None)
    name = inp.table.df["run"][0]
    assert name in hover and "N " in hover and "FLOPs" in hover and "loss" in hover


def test_famous_labels_do_not_overlap_by_the_placer(sweep):
    inp = report.load(sweep, plan_args=PLAN[1:])
    fig = figures.famous(inp.compare, inp.law, inp.flop, plan=inp.plan)
    names = [a.text for a in fig.layout.annotations]
    assert {"AlexaTM", "this plan", "Chinchilla", "GPT-3"} <= set(names)
    assert len(names) == len(set(names))


def test_plot_writes_html_and_png(sweep, tmp_path):
    from browser import chromium
    assert main(["plot", "contours", str(sweep), "--out", str(tmp_path / "c.html")]) == 0
    page = (tmp_path / "c.html").read_text()
    assert page.count("plotly.js v") == 1 and page.count("Plotly.newPlot") == 1
    chromium()   # PNG and SVG go through kaleido and the system's Chromium
    assert main(["plot", "frontier", str(sweep), "--out", str(tmp_path / "f.png"), *PLAN]) == 0
    png = (tmp_path / "f.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.parametrize("argv, message", [
    (["report", "{missing}", "--out", "{out}/r.html"], "no such sweep directory or results table"),
    (["report", "{empty}", "--out", "{out}/r.html"], "no results.parquet in this directory"),
    (["report", "{sweep}", "--fit", "{bad_fit}", "--out", "{out}/r.html"], "not a JSON fit file"),
    (["report", "{sweep}", "--fit", "{not_fit}", "--out", "{out}/r.html"], "not a fit file"),
    (["report", "{sweep}", "--out", "{out}/r.txt"], "unknown file type .txt"),
    (["report", "{sweep}", "--out", "{out}"], "is a directory"),
    (["report", "{sweep}", "--out", "{out}/r.html", "--plan", "--params", "20Q"], "--params"),
    (["report", "{sweep}", "--out", "{out}/r.html", "--plan", "--bogus"], "unrecognized arguments: --bogus"),
    (["plot", "pie", "{sweep}", "--out", "{out}/p.html"], "unknown plot kind 'pie'"),
    (["plot", "famous", "{sweep}", "--out", "{out}/p.html"], "give --plan ARGS"),
    (["plot", "frontier", "{sweep}", "--out", "{out}/p.gif"], "unknown file type .gif"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(sweep, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "nofit.json").write_text(json.dumps({"hello": 1}))
    out = tmp_path / "out"
    out.mkdir()
    paths = dict(missing=tmp_path / "nowhere", empty=tmp_path / "empty", sweep=sweep, bad_fit=tmp_path / "bad.json",
                 not_fit=tmp_path / "nofit.json", out=out)
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert list(out.iterdir()) == []
