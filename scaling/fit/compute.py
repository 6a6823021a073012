"""A fit's FLOP count and what it derives under it: which count a table of runs used, the
compute-optimal N, D and loss at any compute, and Approach 3's a, b, G and D/N.

One count per fit (`approach3.flop_count` and the top-level `flop_count` of fit.json):

- stated by the user (`FitOptions.flops`: a `FlopCount`, its record, or a string as
  `scaling.base.flops.parse_flop_count` reads it: '6nd', '8*N^1', 'encdec:vocab=260,seq_len=32');
- 6ND for a table without a flops column, or whose flops are 6 N D;
- this lab's encoder-decoder formula by shape, for runs that carry their vocabulary and window
  (`vocab_size` and `seq_len` columns, as `scaling sweep collect` writes them), in the N the law
  is fitted on (non-embedding when N is `params_nonembed`);
- otherwise (a foreign table whose flops are not 6ND and say nothing of the model) the runs' own
  FLOPs per token fitted as k N^e, with a warning: that power law is extrapolated beyond the
  runs' sizes, and a stated count replaces it.

Every derived number is then `scaling.base.allocation.compute_optimal` under that count:
exact at every N it is evaluated at, vectorised over computes and bootstrap samples. Under a
power-law count (6ND included) a and b are the closed forms and constant; under the
encoder-decoder count they are the local slopes d log N_opt / d log C and d log D_opt / d log C
at the reference compute `c_ref` (the largest run's), and the record says so.
"""

from __future__ import annotations

import numpy as np

from scaling.base.allocation import compute_optimal
from scaling.base.errors import UserError
from scaling.base.flops import SIX_ND, FlopCount, parse_flop_count
from scaling.fit import law

DEVIATION_WARN = 0.05      # a count this far from the runs' own flops is not theirs


def as_count(stated) -> FlopCount:
    """A count from what a user gives: a FlopCount, its record (dict) or a string."""
    if isinstance(stated, FlopCount):
        return stated
    if isinstance(stated, dict):
        try:
            return FlopCount.from_dict(stated)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"flops: not a FLOP count record ({type(e).__name__}: {e})") from None
    return parse_flop_count(str(stated))


def _one_value(table, name: str, warnings: list):
    v = table.df[name].drop_nulls()
    if v.len() == 0:
        return None
    values = sorted(set(v.to_list()))
    if len(values) > 1:
        big = table.df.sort("flops")[name].drop_nulls()[-1]
        warnings.append(f"the runs differ in {name} ({', '.join(map(str, values))}); the FLOP count takes the "
                        f"largest run's, {big}")
        return big
    return values[0]


def _lab_count(table, warnings: list) -> FlopCount | None:
    """The encoder-decoder count of a table whose runs carry vocab_size and seq_len."""
    if not (table.has("vocab_size") and table.has("seq_len")):
        return None
    vocab, seq = _one_value(table, "vocab_size", warnings), _one_value(table, "seq_len", warnings)
    if vocab is None or seq is None:
        return None
    noise = _one_value(table, "noise_density", warnings) if table.has("noise_density") else None
    tied = _one_value(table, "tied_embeddings", warnings) if table.has("tied_embeddings") else None
    # Runs from before the decoder-only family have no arch column: encoder-decoders.
    arch = (_one_value(table, "arch", warnings) if table.has("arch") else None) or "encdec"
    clm = _one_value(table, "clm_ratio", warnings) if table.has("clm_ratio") else None
    kind = "encdec" if arch == "encdec" else "decoder"
    return FlopCount(kind, int(seq), 0.15 if noise is None else float(noise), int(vocab),
                     True if tied is None else bool(tied), nonembed="nonembed" in (table.params_column or ""),
                     clm_window=arch == "decoder" and clm is not None and float(clm) >= 1.0)


def count_for_table(table, stated=None) -> tuple[FlopCount, dict, list]:
    """The FLOP count of a table of runs (see the module's docstring): the count, its record
    for fit.json, and warnings."""
    n, d, c = table.col("params"), table.col("tokens"), table.col("flops")
    own = c / d
    warnings: list[str] = []
    if stated is not None:
        count = as_count(stated)
        source = "stated"
    elif table.flops_from_6nd:
        count, source = SIX_ND, "the table has no flops column"
    elif np.all(np.abs(own / (6.0 * n) - 1) < 1e-3):
        count, source = SIX_ND, "the table's flops are 6ND"
    else:
        count = _lab_count(table, warnings)
        source = "the runs' vocab_size and seq_len"
        if count is None:
            (k, e), _ = law.flops_per_token_law(n, d, c)
            count = FlopCount("power", k=k, e=e)
            source = "the runs' own FLOPs per token, fitted as k N^e"
    dev = np.abs(count.per_token(n) / own - 1)
    worst = int(np.argmax(dev))
    rec = {**count.to_dict(), "source": source, "max_deviation": float(dev[worst]),
           "per_param_range": [float(v) for v in np.round(count.per_param([n.min(), n.max()]), 4)]}
    if count.kind == "6nd":
        rec["flops_count"] = f"6ND ({source})"
    elif source.startswith("the runs' own"):
        rec["flops_count"] = (f"the runs' FLOPs per token, {count.k:.4g} N^{count.e:.4f} (within {100 * dev[worst]:.1f}% "
                              "of every run), fitted on the runs and extrapolated beyond them")
        if abs(count.e - 1) > 0.02:
            warnings.append(
                f"FLOP count: the runs' FLOPs per token fitted as {count.k:.4g} N^{count.e:.4f}, extrapolated beyond "
                f"their sizes (at 2e10 parameters it gives {float(count.per_param(2e10)):.3g} FLOPs per parameter per "
                "token); a table with vocab_size and seq_len columns (`scaling sweep collect`) is counted by the "
                "encoder-decoder formula instead, or state the count (flops=...)")
    elif count.kind == "power":
        rec["flops_count"] = f"{count.k:.4g} N^{count.e:.4g} per token ({source}), within {100 * dev[worst]:.1f}% of every run"
    else:
        rec["flops_count"] = (f"the encoder-decoder formula by shape (vocab {count.vocab_size}, seq_len {count.seq_len}, "
                              f"noise {count.noise_density:g}{', N non-embedding' if count.nonembed else ''}"
                              f"{'' if count.tied_embeddings else ', untied'}; {source}), within "
                              f"{100 * dev[worst]:.1f}% of every run's own")
    if dev[worst] > DEVIATION_WARN and source != "the runs' own FLOPs per token, fitted as k N^e":
        run = table.df["run"][worst] if table.has("run") else worst
        warnings.append(f"FLOP count {count.describe()} is {100 * dev[worst]:.1f}% off run {run}'s own FLOPs per token "
                        f"({own[worst]:.4g}); are these the runs' vocabulary and window?")
    return count, rec, warnings


def count_of(fit: dict) -> FlopCount:
    """The FLOP count a fit record (fit.json, or its approach3) was derived under; 6ND for a
    record without one."""
    a3 = fit.get("approach3") if isinstance(fit.get("approach3"), dict) else fit
    rec = a3.get("flop_count") or fit.get("flop_count")
    return FlopCount.from_dict(rec) if isinstance(rec, dict) else SIX_ND


def optimal(params, compute, count: FlopCount = SIX_ND) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N_opt, D_opt and the loss there at training compute C under `count`: params is a law
    (dict) or bootstrap rows [S, 5] (E, A, B, alpha, beta); compute a scalar or array. Returns
    arrays of shape C.shape for a dict, [S, *C.shape] for rows."""
    c = np.asarray(compute, float)
    one = isinstance(params, dict)
    al = compute_optimal(params, c.reshape(1, -1), count)
    shape = c.shape if one else (al.n.shape[0], *c.shape)
    return al.n.reshape(shape), al.d.reshape(shape), al.loss.reshape(shape)


def _g_divisor(count: FlopCount) -> float:
    # N_opt = G (C/k)^a: Chinchilla's form under k N^e; 6 under the encoder-decoder count.
    return float(count.k) if count.is_power else 6.0


def derived(params, c_ref: float, count: FlopCount = SIX_ND) -> dict:
    """a, b, G and D/N at compute c_ref under `count` (floats for a dict, arrays [S] for rows
    [S, 5]): a and b the slopes d log N_opt / d log C and d log D_opt / d log C there (constant
    under a power-law count, Chinchilla's eq. 4 under 6ND), G with N_opt = G (C/k)^a at c_ref
    (k = 6 under the encoder-decoder count), D/N the optimum's tokens per parameter."""
    al = compute_optimal(params, c_ref, count)
    with np.errstate(all="ignore"):
        g = al.n / (c_ref / _g_divisor(count)) ** al.a
    out = {"a": al.a[:, 0], "b": al.b[:, 0], "G": g[:, 0], "tokens_per_param": (al.d / al.n)[:, 0]}
    if isinstance(params, dict):
        return {k: float(v[0]) for k, v in out.items()}
    return out


def slopes_note(count: FlopCount, c_ref: float) -> str:
    """What a and b are, for the record and the printed fit."""
    if count.is_power:
        return "a, b: the closed forms under a power-law FLOP count (the same at every compute)"
    return (f"a, b: local slopes d log N_opt/d log C, d log D_opt/d log C at C = {c_ref:.3g} FLOPs "
            "(the largest run's)")
