"""The fit object a notebook gets (`scaling.fit(...)`, scaling/fit/result.py): each of its
methods on the demo-like sweep on disk (tests/sweep_fixture.py) and on DataFrames made in
memory, checked against the functions underneath, and the one clear error of each bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import scaling
from scaling.base.errors import UserError
from scaling.cli import main
from scaling.fit import Fit, FitOptions, FitWarning, compute, fit_all, load_curves, load_runs
from scaling.fit.law import optimal_nd, predict_loss
from sweep_fixture import LAW, write_sweep

ROOT = Path(__file__).resolve().parents[1]
BOOT = 40
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("api") / "sweep")


@pytest.fixture(scope="module")
def fit(sweep):
    with pytest.warns(FitWarning, match="status is not 'completed'"):
        return scaling.fit(sweep / "results.parquet", n_boot=BOOT)


def chinchilla_like(seed: int = 0, noise: float = 0.004) -> pl.DataFrame:
    """A hand-made IsoFLOP table in another lab's column names: 4 budgets x 8 sizes around
    Chinchilla's optimum, losses under its law with noise (analysis/your_table.ipynb makes the same)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in (1e18, 1e19, 1e20, 1e21):
        n_opt, _ = optimal_nd(CHINCHILLA, c)
        for n in n_opt * np.geomspace(1 / 6, 6, 8):
            d = c / (6 * n)
            rows.append({"Model Size": n, "Training Tokens": d, "Training FLOPs": c,
                         "Final Loss": float(predict_loss(CHINCHILLA, n, d)) * float(np.exp(noise * rng.standard_normal()))})
    return pl.DataFrame(rows)


COLS = {"params": "Model Size", "tokens": "Training Tokens", "flops": "Training FLOPs", "loss": "Final Loss"}


# ----------------------------------------------------------------------------- the package


def test_the_package_is_callable_and_its_modules_stay_modules():
    from scaling import fit as f
    from scaling.fit import law

    assert f is scaling.fit and callable(scaling.fit) and f.law is law and f.text.format_fit
    assert "scaling.fit(data" in scaling.__doc__ and "Fit.predict" in scaling.__doc__
    # `import scaling` loads none of the subpackages (nor polars); the first use loads them.
    probe = ("import sys, scaling; print('scaling.fit' in sys.modules, 'polars' in sys.modules); "
             "scaling.fit; print('scaling.fit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr[-2000:]


def test_fitting_draws_no_figure_and_loads_no_plotly():
    """The figures are a layer above the fit: only `Fit.plot` reaches them, when asked."""
    probe = """
import sys, warnings, numpy as np, polars as pl, scaling
n = np.repeat(np.geomspace(1e7, 1e9, 5), 4); d = n * np.tile([5.0, 20, 80, 320], 5)
df = pl.DataFrame({"params": n, "tokens": d, "loss": 1.7 + 400 / n ** 0.34 + 1200 / d ** 0.3})
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    f = scaling.fit(df, n_boot=0, approaches=3)
print(sorted(m for m in ("plotly", "scaling.figures") if m in sys.modules))
f.plot.contours()
print(sorted(m for m in ("plotly", "scaling.figures") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["[]", "['plotly', 'scaling.figures']"], out.stdout


# ----------------------------------------------------------------------------- the demo-like sweep


def test_fit_of_the_sweep_recovers_its_law_and_raises_its_warnings(fit):
    assert fit.approaches == (1, 2, 3)
    assert abs(fit.law["alpha"] - LAW["alpha"]) < 0.05 and abs(fit.law["beta"] - LAW["beta"]) < 0.05
    assert fit.runs.height == 28 and fit.budgets == pytest.approx([1e17, 1e18, 1e19, 1e20])
    assert any("status is not 'completed'" in w for w in fit.warnings)
    assert fit.warnings[:len(fit.record["warnings"])] == fit.record["warnings"]   # and kept in the record
    assert fit.samples.columns == ["E", "A", "B", "alpha", "beta"] and 0.8 * BOOT <= fit.samples.height <= BOOT


def test_params_and_conf_int_are_the_records_numbers(fit):
    p = fit.params
    assert p.columns == ["approach", "name", "value"]
    a3 = p.filter(pl.col("approach") == 3)
    assert a3["name"].to_list() == ["E", "A", "B", "alpha", "beta", "a", "b", "G", "tokens_per_param"]
    assert dict(zip(a3["name"], a3["value"])) == {k: fit.record["approach3"][k] for k in a3["name"]}
    assert p.filter(pl.col("approach") == 2)["name"].to_list() == ["a", "k_N", "b", "k_D"]
    ci = fit.conf_int()
    for row in ci.filter(pl.col("approach") == 3).iter_rows(named=True):
        assert [row["lower"], row["upper"]] == fit.record["approach3"]["ci"][row["name"]]
    # Another level is read off the same bootstrap samples: the 50% interval lies inside the 95%.
    half = fit.conf_int(0.5).filter(pl.col("approach") == 3)
    wide = ci.filter(pl.col("approach") == 3)
    assert (half["lower"] >= wide["lower"] - 1e-12).all() and (half["upper"] <= wide["upper"] + 1e-12).all()
    s = fit.samples["alpha"].to_numpy()
    assert half.filter(pl.col("name") == "alpha")["lower"][0] == pytest.approx(np.percentile(s, 25))
    # a read off the optimum (slope of log N_opt) under 6ND is beta / (alpha + beta), sample by sample
    a_half = half.filter(pl.col("name") == "a")["lower"][0]
    a_s = fit.samples["beta"].to_numpy() / (fit.samples["alpha"].to_numpy() + fit.samples["beta"].to_numpy())
    assert a_half == pytest.approx(np.percentile(a_s, 25), rel=1e-6)
    with pytest.raises(UserError, match="between 0 and 1"):
        fit.conf_int(95)


def test_predict_is_the_law_with_the_bootstraps_interval(fit):
    n = np.array([1e8, 1e9, 1e10])
    d = np.array([2e9, 2e10, 2e11])
    pr = fit.predict(n, d)
    assert pr.columns == ["params", "tokens", "loss", "loss_lower", "loss_upper"]
    np.testing.assert_array_equal(pr["loss"].to_numpy(), predict_loss(fit.law, n, d))
    s = fit.samples.to_numpy()
    by_hand = s[:, 0:1] + s[:, 1:2] / n ** s[:, 3:4] + s[:, 2:3] / d ** s[:, 4:5]
    np.testing.assert_allclose(pr["loss_lower"].to_numpy(), np.percentile(by_hand, 2.5, axis=0), rtol=1e-12)
    np.testing.assert_allclose(pr["loss_upper"].to_numpy(), np.percentile(by_hand, 97.5, axis=0), rtol=1e-12)
    assert (pr["loss_lower"] < pr["loss"]).all() and (pr["loss"] < pr["loss_upper"]).all()
    # Broadcast: three sizes at one token count; no interval asked, none given.
    one = fit.predict(n, 1e10, interval=None)
    assert one.height == 3 and one["tokens"].to_list() == [1e10] * 3 and one["loss_lower"].null_count() == 3
    assert (fit.predict(1e9, 2e10, interval=0.5)["loss_upper"] < pr["loss_upper"][1]).all()
    with pytest.raises(UserError, match="positive"):
        fit.predict([1e9, -1], 1e10)


def test_optimal_is_the_optimum_of_the_law_under_the_fits_count(fit):
    c = np.array([1e19, 1e21, 1e23])
    op = fit.optimal(c)
    assert op.height == 3 and op.columns[:4] == ["compute", "params", "params_lower", "params_upper"]
    n, d = optimal_nd(fit.law, c, (6.0, 1.0))     # the sweep's FLOPs are 6ND
    np.testing.assert_allclose(op["params"].to_numpy(), n, rtol=1e-12)
    np.testing.assert_allclose(op["tokens"].to_numpy(), d, rtol=1e-12)
    np.testing.assert_allclose(op["loss"].to_numpy(), predict_loss(fit.law, n, d), rtol=1e-12)
    for k in ("params", "tokens", "loss"):
        assert (op[f"{k}_lower"] <= op[k]).all() and (op[k] <= op[f"{k}_upper"]).all(), k
    assert op["params"].is_sorted() and (op["params_upper"] > op["params_lower"]).all()
    # The interval is over the bootstrap's laws: one sample's own optimum lies inside it.
    n0, _ = optimal_nd(dict(zip(["E", "A", "B", "alpha", "beta"], fit.samples.row(0))), 1e21)
    assert op["params_lower"][1] <= float(n0) <= op["params_upper"][1]
    assert fit.optimal(1e21).height == 1


def test_a_labs_table_is_counted_by_its_shapes_and_optimal_uses_that_count():
    """The lab's runs (their shape columns, as `scaling sweep collect` writes them) are counted
    by the encoder-decoder formula (scaling/fit/compute.py): `Fit.optimal` and the intervals of
    a, b, G and D/N use that count, not 6ND (issue 27: one answer to one question)."""
    from test_flop_convention import LAB, lab_table

    f = scaling.fit(lab_table(), columns="params=params_nonembed", n_boot=BOOT, approaches=3, holdout_budget=False)
    assert compute.count_of(f.record) == LAB and f.runs["vocab_size"].unique().to_list() == [260]
    c = np.array([1e12, 1e15, 1e18])
    op = f.optimal(c)
    n, d, loss = compute.optimal(f.law, c, LAB)
    np.testing.assert_allclose(op["params"].to_numpy(), n, rtol=1e-12)
    np.testing.assert_allclose(op["tokens"].to_numpy(), d, rtol=1e-12)
    np.testing.assert_allclose(op["loss"].to_numpy(), loss, rtol=1e-12)
    assert np.all(np.abs(op["params"].to_numpy() / optimal_nd(f.law, c)[0] - 1) > 0.02)    # 6ND: another answer
    s = f.samples.to_numpy()
    lo_hi = np.percentile(compute.optimal(s, c, LAB)[0], [2.5, 97.5], axis=0)
    np.testing.assert_allclose(op[["params_lower", "params_upper"]].to_numpy().T, lo_hi, rtol=1e-12)
    a3 = f.conf_int(0.9).filter(pl.col("approach") == 3)
    a_s = compute.derived(s, f.record["approach3"]["c_ref"], LAB)["a"]
    assert a3.filter(pl.col("name") == "a")["lower"][0] == pytest.approx(np.percentile(a_s, 5), rel=1e-9)
    assert f.conf_int().filter(pl.col("name") == "a")["value"][0] == f.record["approach3"]["a"]


def test_without_the_largest_budget_is_fit_all_on_the_table_without_it(fit, sweep, tmp_path):
    top = max(fit.budgets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        less = fit.without(budgets=[top])
    assert less.runs.height == 21 and max(less.budgets) == pytest.approx(1e19)
    raw = pl.read_parquet(sweep / "results.parquet").filter(pl.col("budget") != top)
    raw.write_parquet(tmp_path / "results.parquet")
    table = load_runs(tmp_path / "results.parquet")
    by_hand = fit_all(table, load_curves(sweep / "curves.parquet", table), FitOptions(n_boot=BOOT, progress=False))
    for key in ("approach1", "approach2", "approach3", "n_runs", "range"):
        assert less.record[key] == by_hand[key], key
    assert "holdout_budget" in less.record and less.record["holdout_budget"] == by_hand["holdout_budget"]
    with pytest.raises(UserError, match="no budget 3e.*the budgets are 1e.17"):
        fit.without(budgets=[3e18])
    with pytest.raises(UserError, match="no run 'nope'"):
        fit.without(runs=["nope"])


def test_where_refits_on_the_runs_it_keeps(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        small = fit.where(pl.col("budget") < 1e20)
        masked = fit.where(fit.runs["budget"].to_numpy() < 1e20)
        without = fit.without(budgets=[1e20])
    assert small.record["approach3"] == masked.record["approach3"] == without.record["approach3"]
    assert "where" in small.record["source"]
    with pytest.raises(UserError, match="where: cannot evaluate"):
        fit.where(pl.col("no_such_column") > 1)
    with pytest.raises(UserError, match="one true/false per run"):
        fit.where([True, False])


def test_holdout_and_rollout_tables(fit):
    held = fit.holdout()
    h3 = fit.record["holdout_budget"]["approach3"]
    assert held.height == len(h3["runs"]) == 7
    assert {"run", "loss", "predicted", "rel_error"} <= set(held.columns)
    assert float(held["rel_error"].abs().mean()) == pytest.approx(h3["mean_abs_rel_error"])
    assert float(held["rel_error"].abs().max()) < 0.05       # the law of the sweep holds at the next budget
    top = fit.holdout(top=3)
    assert top.height == 3 and top["flops"].min() >= fit.runs["flops"].sort()[-3]
    roll = fit.rollout()
    assert {"fit_budgets", "budget", "extrapolation", "approach3_mean_abs_rel_error"} <= set(roll.columns)
    assert roll["fit_budgets"].to_list() == [2, 2, 3]          # one budget cannot tell N from D: k = 1 skipped
    assert roll["extrapolation"].to_list() == pytest.approx([10, 100, 10])
    assert float(roll.filter(pl.col("fit_budgets") == 3)["approach3_mean_abs_rel_error"][0]) < 0.05


def test_summary_is_what_scaling_fit_prints(fit, sweep, capsys):
    assert main(["fit", str(sweep / "results.parquet"), "--bootstrap", str(BOOT), "--no-progress"]) == 0
    assert capsys.readouterr().out == fit.summary() + "\n"
    assert fit.summary().startswith("28 runs from ") and "Approach 3" in fit.summary()


def test_repr_is_a_few_lines_without_the_samples(fit):
    r = repr(fit)
    assert r.startswith("<scaling.fit.Fit: 28 runs from ") and len(r.splitlines()) <= 6 and len(r) < 900
    assert "approach 3: L = " in r and "[[" not in r and "alpha 0.3" in r


def test_to_json_and_from_json_round_trip(fit, tmp_path):
    path = fit.to_json(tmp_path / "fit.json")
    assert json.loads(path.read_text()) == json.loads(fit.to_json()) == json.loads(json.dumps(fit.record))
    with pytest.warns(FitWarning):
        back = Fit.from_json(path)
    assert back.record == json.loads(fit.to_json())
    assert back.params.equals(fit.params) and back.conf_int(0.8).equals(fit.conf_int(0.8))
    assert back.predict([1e9], [2e10]).equals(fit.predict([1e9], [2e10]))
    assert back.optimal([1e21]).equals(fit.optimal([1e21]))
    assert back.runs.height == fit.runs.height          # its source still exists: its runs are read back
    assert back.options.n_boot == BOOT and back.options.approaches == (1, 2, 3)
    # A record whose runs are gone: the numbers work, a refit says what it needs.
    gone = dict(fit.record, source=str(tmp_path / "gone.parquet"))
    (tmp_path / "gone.json").write_text(json.dumps(gone))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        alone = Fit.from_json(tmp_path / "gone.json")
    assert alone.table is None and alone.predict(1e9, 2e10).equals(fit.predict(1e9, 2e10))
    with pytest.raises(UserError, match="read without its runs"):
        alone.without(budgets=[1e20])
    with pytest.raises(UserError, match="read without its runs"):
        alone.plot.residuals()
    with pytest.raises(UserError, match="not a fit file"):
        (tmp_path / "x.json").write_text("{}")
        Fit.from_json(tmp_path / "x.json")


def test_plot_draws_each_figure_of_the_fit(fit):
    figs = {k: getattr(fit.plot, k)() for k in ("frontier", "isoflop", "contours", "residuals", "loss_curves",
                                                 "heldout")}
    for k, f in figs.items():
        assert len(f.data) >= 2, k
    names = {t.name for t in figs["frontier"].data if t.showlegend is not False and t.name}
    assert any(n.startswith("approach 3") for n in names) and any("Chinchilla" in n for n in names)
    assert len(fit.plot.all()) == 6


# ----------------------------------------------------------------------------- DataFrames


def test_a_polars_dataframe_with_its_own_column_names(fit):
    df = chinchilla_like()
    f = scaling.fit(df, columns=COLS, n_boot=BOOT, approaches=(2, 3))
    assert f.record["source"] == "a polars DataFrame" and f.record["n_runs"] == 32
    assert abs(f.law["alpha"] - 0.34) < 0.05 and abs(f.law["beta"] - 0.28) < 0.05
    assert f.record["approach3"]["flop_count"]["flops_count"].startswith("6ND")
    # The column mapping as the CLI's string gives the same fit; so does a LazyFrame.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        same = scaling.fit(df.lazy(), columns="params=Model Size,tokens=Training Tokens,flops=Training FLOPs,loss=Final Loss",
                           n_boot=BOOT, approaches=(2, 3))
    assert same.record["approach3"] == f.record["approach3"]
    pr = f.predict(7e10, 1.4e12)
    assert pr["loss_lower"][0] < pr["loss"][0] < pr["loss_upper"][0]
    assert abs(pr["loss"][0] - predict_loss(CHINCHILLA, 7e10, 1.4e12)) < 0.05
    op = f.optimal(5.76e23)
    assert op["params_lower"][0] < op["params"][0] < op["params_upper"][0]
    n, _ = optimal_nd(f.law, 5.76e23)
    assert op["params"][0] == pytest.approx(float(n))
    assert f.plot.frontier() is not None and f.plot.contours() is not None
    with pytest.raises(UserError, match="no budget"):
        f.without(budgets=[1.0])


def test_any_table_with_the_arrow_stream_interface():
    df = chinchilla_like().rename({"Model Size": "params", "Training Tokens": "tokens", "Training FLOPs": "flops",
                                   "Final Loss": "loss"})

    class ArrowTable:
        """Some other library's table, known only by the Arrow PyCapsule interface."""

        def __arrow_c_stream__(self, requested_schema=None):
            return df.__arrow_c_stream__(requested_schema)

    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)       # a clean table: no warning
        a = scaling.fit(ArrowTable(), n_boot=0, approaches=3)
        b = scaling.fit(df, n_boot=0, approaches=3)
    assert a.record["approach3"] == b.record["approach3"] and a.record["source"] == "a test_fit_api ArrowTable"


def test_a_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    df = chinchilla_like()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        a = scaling.fit(pd.DataFrame(df.to_dict(as_series=False)), columns=COLS, n_boot=20, approaches=3)
        b = scaling.fit(df, columns=COLS, n_boot=20, approaches=3)
    assert a.record["approach3"] == b.record["approach3"] and a.record["source"] == "a pandas DataFrame"


def test_load_runs_takes_the_mapping_as_a_string_too(tmp_path):
    p = tmp_path / "runs.csv"
    chinchilla_like().write_csv(p)
    as_dict = load_runs(p, COLS)
    as_text = load_runs(p, "params=Model Size,tokens=Training Tokens,flops=Training FLOPs,loss=Final Loss")
    assert as_dict.df.equals(as_text.df) and as_dict.params_column == "Model Size"
    assert load_runs(chinchilla_like(), COLS).df.equals(as_dict.df)     # the same table from memory


# ----------------------------------------------------------------------------- bad input


def test_a_missing_column_is_one_error_naming_it():
    df = chinchilla_like().drop("Training Tokens", "Training FLOPs")
    with pytest.raises(UserError, match=r"missing column\(s\) tokens; columns are: Model Size, Final Loss.*"
                                        r"columns=\{'tokens': COLUMN\}"):
        scaling.fit(df, columns={"params": "Model Size", "loss": "Final Loss"})
    with pytest.raises(UserError, match="no column 'Tokens' \\(mapped to tokens\\)"):
        scaling.fit(chinchilla_like(), columns={**COLS, "tokens": "Tokens"})
    with pytest.raises(UserError, match="a mapping goes name -> column: \\{'params': 'Model Size'\\}"):
        scaling.fit(chinchilla_like(), columns={"Model Size": "params"})
    with pytest.raises(UserError, match="unknown name 'size'"):
        scaling.fit(chinchilla_like(), columns="size=Model Size")


def test_nan_losses_are_one_error_naming_the_column():
    df = chinchilla_like().with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("Final Loss")).alias("Final Loss"))
    with pytest.raises(UserError, match="column 'Final Loss' \\(loss\\) has 1 missing, NaN.*run 3.*invalid='drop'"):
        scaling.fit(df, columns=COLS, n_boot=0, approaches=3)
    with pytest.warns(FitWarning, match="dropped 1 row"):
        f = scaling.fit(df, columns=COLS, n_boot=0, approaches=3, invalid="drop")
    assert f.record["n_runs"] == 31 and f.record["dropped"] == 1


def test_counts_in_other_units_are_one_error_naming_the_column():
    df = chinchilla_like()
    billions = df.with_columns(pl.col("Training Tokens") / 1e9)
    with pytest.raises(UserError, match="column 'Training Tokens' \\(tokens\\): every value is below 1,000"):
        scaling.fit(billions, columns=COLS)
    millions = df.with_columns(pl.col("Training Tokens") / 1e6)    # 4,000 to 500,000: not all below 1,000
    with pytest.raises(UserError, match="columns 'Training Tokens' \\(tokens\\) and 'Model Size' \\(params\\) "
                                        "disagree in units: the median run trains on 3.64e-05 tokens per parameter"):
        scaling.fit(millions, columns=COLS)


def test_options_are_fitoptions_names():
    with pytest.raises(TypeError, match="unknown option 'bootstrap' \\(the CLI's --bootstrap is 'n_boot' here\\)"):
        scaling.fit(chinchilla_like(), columns=COLS, bootstrap=10)
    with pytest.raises(UserError, match="approaches: expected some of 1, 2, 3"):
        scaling.fit(chinchilla_like(), columns=COLS, approaches=(4,))
    with pytest.raises(UserError, match="expected a path .* or a DataFrame"):
        scaling.fit(42)
