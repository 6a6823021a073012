"""The lab's GPU check: the figures a GPU can give, in one command, into one folder.

    bash bench/gpu_check.sh OUT                  # a fresh GPU machine: installs, then runs this
    python bench/gpu_check.py --out OUT          # torch with CUDA and the lab already installed
    python bench/gpu_check.py --out OUT --dry-run   # on CPU in seconds: tiny sizes, few steps, byte-level data

Four stages, each timed, each a table in OUT (and OUT/summary.md with all of them):

1. mfu.md: MFU at 50M, 300M and 1B (bf16 autocast, torch.compile, batch 32 x 1024) by
   bench/bench_train.py, against the README's H100 figures at the same batch (27.5%, 39.1%,
   43.8%; 40.4% at 300M with a batch of 64) and the issue's aim of 45% at 300M.
2. strategies.md: one 50M run three ways on the one GPU, through `scaling train`: plain,
   DDP-wrapped (`--strategy ddp`) and FSDP2 (`--strategy fsdp`); tokens/s and MFU of each.
   A checkout whose `scaling train` has no --strategy says so in the table and goes on.
3. isoflop.md: a small IsoFLOP sweep of the lab's encoder-decoders, 1e14-3e15 FLOPs per run,
   three sizes per budget (2.5x either side of 20 tokens a parameter, batch 256 x 256) on
   byte-level shards of the embedded corpus (`--data` to change; at 0.3M-12M parameters an
   8192-token embedding would be most of the smaller models), four runs side by side on the
   one GPU (`sweep launch --executor local`, each run planned into a quarter of the GPU's
   memory: `gpu_mem_gb`), collected and fitted (`scaling fit`): the AlexaTM objective's first
   law from this lab on a GPU. `--budgets` changes the budgets.
4. summary.md: the above, the device, torch's version, each stage's time.

On a GPU every stage runs as the user would run it (a subprocess: bench_train, the CLI), so a
stage that fails is reported with its error and the others still run. `--budget-s` bounds the
whole check (default 420 s; gpu_check.sh passes what its install left of 8 minutes): a stage
gets what is left, one that runs out is stopped with SIGTERM (a launch checkpoints its runs)
and reported as such, and the sweep's finished runs are still collected and fitted. Nothing
here asserts a figure; the tables say what was measured. The exit is 1 when any stage failed
(its table says why), 2 for bad arguments.

The dry run trains everything on byte-level shards (the given --data must be byte-level: its
models have 13K-100K parameters), built from the embedded corpus into the cache on first use
(a few minutes, once).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Every subprocess runs this checkout's lab, installed or not.
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
README_MFU = {"50M": 0.275, "300M": 0.391, "1B": 0.438}   # README, one H100, batch 32 x 1024
AIM_300M = 0.45                                            # issue 29: 45% at 300M (today 40.4% at batch 64)


class Clock:
    """The check's time budget: each stage's subprocess gets what is left."""

    def __init__(self, budget_s: float):
        self.t0, self.budget_s = time.monotonic(), budget_s

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)


def run(cmd: tuple[str, list[str]], log: Path, clock: Clock, in_process: bool = False) -> tuple[int, float]:
    """(exit code, seconds) of ("bench_train" | "scaling", argv) with its output in `log`; 124
    when the budget ran out. On a GPU each is a subprocess, as a user runs it (a stage that
    fails or fills the GPU leaves the next a clean process); the dry run calls the same entry
    point with the same arguments in this process, paying torch's and Lightning's start once."""
    t = time.monotonic()
    what, argv = cmd
    with open(log, "w") as f:
        if in_process:
            code = _in_process(what, argv, f)
        else:
            exe = [str(ROOT / "bench" / "bench_train.py")] if what == "bench_train" else ["-m", "scaling.cli"]
            p = subprocess.Popen([sys.executable, *exe, *argv], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env={**os.environ, **ENV})
            try:
                code = p.wait(timeout=max(1.0, clock.left()))
            except subprocess.TimeoutExpired:
                # SIGTERM: a launcher stops its runs at their step boundary (checkpointed), so no
                # orphan keeps the GPU; the finished runs are still collected and fitted.
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                f.write("\n[gpu_check: stopped, the check's time budget ran out]\n")
                code = 124
    return code, time.monotonic() - t


def _in_process(what: str, argv: list[str], f) -> int:
    import contextlib
    import runpy
    import traceback

    with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            if what == "scaling":
                from scaling.cli import main as cli

                return cli(argv)
            bench = runpy.run_path(str(ROOT / "bench" / "bench_train.py"), run_name="bench_train")
            old, sys.argv = sys.argv, ["bench_train.py", *argv]
            try:
                return bench["main"]()
            finally:
                sys.argv = old
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc()
            return 1


def scaling_cmd(*args: str) -> tuple[str, list[str]]:
    return "scaling", list(args)


def tail(log: Path, n: int = 1) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return " / ".join(lines[-n:])[:300] if lines else "(no output)"


# ------------------------------------------------------------------------- stages
def stage_mfu(out: Path, clock: Clock, dry: bool, data: str | None) -> tuple[str, bool]:
    js = out / "mfu.json"
    argv = ["--json", str(js)]
    sizes = ["100K"] if dry else ["50M", "300M", "1B"]
    argv += (["--sizes", ",".join(sizes), "--steps", "8", "--seq-len", "32", "--batch-size", "4"] if dry
             else ["--gpu", "--sizes", ",".join(sizes), "--steps", "30", "--batch-size", "32"])
    argv += ["--data", data] if data else []
    code, secs = run(("bench_train", argv), out / "mfu.log", clock, in_process=dry)
    rows = json.loads(js.read_text())["results"] if js.exists() else []
    how = "dry run: CPU, fp32, 100K" if dry else "bf16, torch.compile, batch 32 x 1024"
    failed = "" if code == 0 else f", exit {code}: {tail(out / 'mfu.log')}"
    lines = [f"MFU by bench/bench_train.py ({how}), {secs:.0f} s{failed}", "",
             "| size | params | tokens/s | MFU | README (H100, same batch) | difference |", "|---|---|---|---|---|---|"]
    for r in rows:
        ref = README_MFU.get(r["size"])
        diff = f"{(r['mfu'] - ref) * 100:+.1f} points" if ref and not dry else "-"
        shown = f"{ref:.1%}" if ref else "-"
        lines.append(f"| {r['size']} | {r['n_params']:,} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {shown} | {diff} |")
    at300 = next((r["mfu"] for r in rows if r["size"] == "300M"), None)
    if at300 is not None:
        lines += ["", f"300M: {at300:.1%} against the aim of {AIM_300M:.0%} "
                      f"({'met' if at300 >= AIM_300M else 'not met'})."]
    # bench_train reports a size that fails (out of memory) and goes on: every size must have its row.
    return "\n".join(lines), code == 0 and len(rows) == len(sizes)


def _has_strategy_flag() -> bool:
    """Whether this checkout's `scaling train` takes --strategy (the FSDP branch adds it)."""
    import argparse as ap

    from scaling.commands import train

    parser = ap.ArgumentParser()
    train.register(parser.add_subparsers())
    return "--strategy" in parser._subparsers._group_actions[0].choices["train"].format_help()


def stage_strategies(out: Path, clock: Clock, dry: bool, data: str | None) -> tuple[str, bool]:
    # 50M, not 300M: three compilations of 300M would take a third of the check's 8 minutes,
    # and a strategy's per-step cost shows most where the step is short.
    size, steps, batch, seq = ("100K", 8, 4, 32) if dry else ("50M", 40, 32, 1024)
    base = ["train", "--params", size, "--tokens", str(steps * batch * seq), "--seq-len", str(seq),
            "--batch-size", str(batch), "--val-points", "1", "--checkpoint-every", "1e9", "--no-progress",
            "--no-keep-weights", *(["--data", data] if data else [])]
    base += ["--device", "cpu", "--precision", "32"] if dry else ["--device", "cuda", "--precision", "bf16-mixed", "--compile"]
    flag = _has_strategy_flag()
    lines = [f"One {size} run three ways on one {'CPU process (dry run)' if dry else 'GPU'}, {steps} steps of "
             f"{batch} x {seq} through `scaling train`", "",
             "| strategy | tokens/s | MFU | against plain | seconds | note |", "|---|---|---|---|---|---|"]
    plain, ok = None, True
    for name, extra in (("plain", []), ("ddp", ["--strategy", "ddp"]), ("fsdp", ["--strategy", "fsdp"])):
        if extra and not flag:
            lines.append(f"| {name} | - | - | - | - | not run: this checkout's `scaling train` has no --strategy |")
            continue
        rd = out / "runs" / f"strategy-{name}"
        shutil.rmtree(rd, ignore_errors=True)
        code, secs = run(scaling_cmd(*base, *extra, "--out", str(rd)), out / f"strategy-{name}.log", clock,
                         in_process=dry)
        tps, mfu = _speed(rd)
        if name == "plain":
            plain = tps
        rel = f"{tps / plain:.3f}x" if tps and plain else "-"
        log = out / f"strategy-{name}.log"
        note = "" if code == 0 else f"exit {code}: {tail(log)}"
        ok = ok and code == 0
        speed = f"{tps:,.0f}" if tps else "-"
        share = f"{mfu:.1%}" if mfu else "-"
        lines.append(f"| {name} | {speed} | {share} | {rel} | {secs:.0f} | {note} |")
    return "\n".join(lines), ok


def _speed(run_dir: Path) -> tuple[float | None, float | None]:
    """Median tokens/s and MFU of a run's logged training intervals after the first two."""
    f = run_dir / "metrics.parquet"
    if not f.exists():
        return None, None
    import polars as pl

    rows = pl.read_parquet(f).filter(pl.col("split") == "train").to_dicts()[2:] or pl.read_parquet(f).to_dicts()
    tps = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    mfu = [r["mfu"] for r in rows if r.get("mfu") and r["mfu"] == r["mfu"]]
    return (statistics.median(tps) if tps else None), (statistics.median(mfu) if mfu else None)


SWEEP = """# Written by bench/gpu_check.py: a small IsoFLOP sweep on the one GPU, {side} runs side by side.
[sweep]
name = "gpu-check"
kind = "isoflop"
out = "sweep"

[isoflop]
budgets = {budgets}
{sizes}

[train]
{data}seq_len = {seq}
batch_size = {batch}
lr = "rule"
val_points = 4
val_examples = {val}
precision = "{precision}"
device = "{device}"
progress = false
keep_weights = false
checkpoint_every_s = 1e9

[executor]
default = "local"
gpus_per_node = {gpus}
gpu_mem_gb = {gpu_gb}             # each run a share of the one GPU's memory
cpus_per_task = {cpus}
parallelism = {side}
time_min = 30
"""


def stage_isoflop(out: Path, clock: Clock, dry: bool, data: str | None, budgets: str | None = None) -> tuple[str, bool]:
    side = 2 if dry else 4
    # The dry run's three budgets give the 9 runs over 3 sizes that Approach 3 needs to fit, of
    # 8-25 steps each: the path, in seconds.
    budgets = f"[{budgets}]" if budgets else ("[3e8, 6e8, 1e9]" if dry else "[1e14, 3e14, 1e15, 3e15]")
    # The dry run's sizes are the smallest the tiny data's vocabulary can build; on the GPU,
    # three sizes from a third to three times the guessed optimum at 20 tokens a parameter.
    sizes = ('sizes = ["13K", "20K", "30K"]' if dry else
             "sizes_per_budget = 3\nspread = 2.5\ncenter_tokens_per_param = 20")
    f = out / "isoflop.toml"
    f.write_text(SWEEP.format(
        side=side, budgets=budgets, sizes=sizes, data=f'data = "{data}"\n' if data else "", seq=32 if dry else 256,
        batch=16 if dry else 256, val=16 if dry else 256, precision="32" if dry else "bf16-mixed",
        device="cpu" if dry else "cuda", gpus=0 if dry else 1, gpu_gb=_gpu_gb(dry) // side, cpus=1 if dry else 3))
    logs = []
    t = time.monotonic()
    # The dry run's runs train in the launcher's process (debug): the local executor's side by
    # side runs are the GPU's business, and a process per tiny run would cost the dry run its seconds.
    for name, cmd in (("plan", scaling_cmd("sweep", "plan", str(f))),
                      ("launch", scaling_cmd("sweep", "launch", str(f), *(["--executor", "debug"] if dry else []))),
                      ("collect", scaling_cmd("sweep", "collect", str(out / "sweep"))),
                      ("fit", scaling_cmd("fit", str(out / "sweep" / "results.parquet"), "--bootstrap",
                                          "10" if dry else "200", "--no-holdout"))):
        code, _ = run(cmd, out / f"isoflop-{name}.log", clock, in_process=dry)
        logs.append((name, code))
        # A launch that failed a run (1) or ran out of time (124) still leaves runs to collect.
        if code and name in ("plan", "collect"):
            break
    secs = time.monotonic() - t
    ok = len(logs) == 4 and not any(code for _, code in logs)
    lines = [f"A small IsoFLOP sweep ({budgets} FLOPs per run, 3 sizes each, {side} side by side), "
             f"{secs:.0f} s: " + ", ".join(f"{n} exit {c}" for n, c in logs), "",
             "Runs (`scaling sweep plan`):", "", "```", (out / "isoflop-plan.log").read_text().rstrip(), "```"]
    fit_log = out / "isoflop-fit.log"
    if fit_log.exists():
        lines += ["", "The fit (`scaling fit`):", "", "```", fit_log.read_text().rstrip(), "```"]
    return "\n".join(lines), ok


def _gpu_gb(dry: bool) -> int:
    """GB of memory of the GPU the sweep shares (80 in a dry run: no GPU to plan for)."""
    if dry:
        return 80
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory / 1e9)


def byte_data(data: str | None) -> str:
    """The shards the tiny models and the sweep train on: the given ones, else byte-level shards
    of the embedded corpus (the demo's tokenizer), built into the cache on first use. Bytes,
    not the default 8192-token BPE: at 1e14-3e15 FLOPs a run has 0.3M-12M parameters, and an
    8192-token embedding would be most of the smaller ones (their loss then follows the rest)."""
    if data:
        return data
    from scaling.data.shards import ensure_default_shards

    return str(ensure_default_shards(tokenizer="bytes", progress=False))


def vocabulary(data: str) -> int:
    """The vocabulary of a shards directory (its meta.json)."""
    return int(json.loads((Path(data) / "meta.json").read_text())["vocab_size"])


def device_line(dry: bool) -> str:
    import torch

    if dry or not torch.cuda.is_available():
        return f"CPU (dry run), torch {torch.__version__}"
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for the tables and logs")
    ap.add_argument("--dry-run", action="store_true", help="on CPU in seconds: tiny sizes, few steps")
    ap.add_argument("--data", default=None, help="token shards (default: the embedded corpus)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds for the whole check (default 420 on a GPU: 8 minutes with the install)")
    ap.add_argument("--stages", default="mfu,strategies,isoflop", help="which stages, in order")
    ap.add_argument("--budgets", default=None, metavar="C,C,...",
                    help="the IsoFLOP sweep's FLOP budgets per run (default 1e14,3e14,1e15,3e15)")
    args = ap.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device here; run with --dry-run on a CPU", file=sys.stderr)
            return 2
    data = str(Path(args.data).resolve()) if args.data else None
    stages = {"mfu": stage_mfu, "strategies": stage_strategies,
              "isoflop": lambda out, clock, dry, d: stage_isoflop(out, clock, dry, byte_data(d), budgets=args.budgets)}
    unknown = [n for n in args.stages.split(",") if n not in stages]
    if unknown:
        print(f"error: --stages: no stage {', '.join(unknown)} (the stages: {', '.join(stages)})", file=sys.stderr)
        return 2
    if args.dry_run:
        # The dry run's tiny models (13K-100K parameters) need a byte-level vocabulary.
        if data is None:
            print("[gpu_check] dry run on byte-level shards of the embedded corpus (built on first use)", flush=True)
        data = byte_data(data)
        if vocabulary(data) > 512:
            print(f"error: --data {args.data}: a vocabulary of {vocabulary(data):,}; the dry run's tiny models need "
                  f"byte-level shards (`scaling prepare --tokenizer bytes`), or leave --data out", file=sys.stderr)
            return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget_s or (300 if args.dry_run else 420))
    parts, times, failed = [], [], []
    for name in args.stages.split(","):
        t = time.monotonic()
        try:
            text, ok = stages[name](out, clock, args.dry_run, data)
        except Exception as e:   # a stage's own failure (a missing table): reported, the rest still run
            text, ok = f"{name}: failed: {type(e).__name__}: {e}", False
        times.append((name, time.monotonic() - t))
        if not ok:
            failed.append(name)
        (out / f"{name}.md").write_text(text + "\n")
        parts.append(f"## {name}\n\n{text}\n")
        print(f"[gpu_check] {name}: {times[-1][1]:.0f} s", flush=True)
    head = (f"# GPU check{' (dry run)' if args.dry_run else ''}\n\n{device_line(args.dry_run)}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; stages: "
            + ", ".join(f"{n} {s:.0f} s" for n, s in times) + "\n")
    (out / "summary.md").write_text(head + "\n" + "\n".join(parts))
    print(f"[gpu_check] tables in {out}: summary.md, " + ", ".join(f"{n}.md" for n, _ in times))
    if failed:
        # The tables are written either way; the exit says whether every stage ran through.
        print(f"[gpu_check] failed: {', '.join(failed)} (see {', '.join(f'{n}.md' for n in failed)})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
