"""Per-size learning-rate tuning with Optuna.

    Tuner(TuneConfig(...)).run()  ->  the best.json record

One Optuna study per model size, kept in OUT/study.journal (a JournalStorage file: safe on
a shared filesystem, unlike SQLite, and appendable by several processes). Each trial is a
real run (TrainingRun) in OUT/trials/<number>/ at a log-uniform peak learning rate; its
value is the run's final mixed validation loss. A diverged run is a PRUNED trial (TPE ranks
it worst, so it learns to stay below that lr); a failed run is a FAIL trial with the error.

Rerunning resumes: finished trials are kept, a trial left RUNNING by a killed command is
resumed from its run directory's checkpoint and told its result, and only the remaining
trials up to `trials` are asked for. The first trial of a new study is the rule-of-N lr
(train.lr_rule) when it lies in the range, so best.json compares tuned vs rule directly.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scaling.config import TrainConfig, parse_count
from scaling.errors import UserError
from scaling.rundir import atomic_write_json

JOURNAL = "study.journal"
BEST = "best.json"
TRIALS_DIR = "trials"
LOCK = ".tune.lock"


@dataclass
class TuneConfig:
    params: str = "2M"
    tokens: int = 2_000_000
    out: str = "tune/2M"
    trials: int = 8
    lr_min: float = 1e-4
    lr_max: float = 3e-2
    seed: int = 0
    jobs: int = 1
    data: str | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    val_points: int | None = None
    device: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        parse_count(self.params, "--params")
        parse_count(self.tokens, "--tokens")
        if self.trials < 1:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {self.jobs}")
        if not (0 < self.lr_min < 1 and 0 < self.lr_max < 1):
            raise UserError(f"--lr-min and --lr-max must be in (0, 1), got {self.lr_min} and {self.lr_max}")
        if self.lr_min >= self.lr_max:
            raise UserError(f"--lr-min ({self.lr_min}) must be smaller than --lr-max ({self.lr_max})")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.seq_len is not None and self.seq_len < 16:
            raise UserError(f"--seq-len must be >= 16, got {self.seq_len}")

    def identity(self) -> dict:
        """What defines the study: rerunning with other values would mix incomparable trials.
        The trial count, jobs, device and progress may change between reruns."""
        d = dataclasses.asdict(self)
        for k in ("out", "trials", "jobs", "device", "progress"):
            d.pop(k)
        d["params"] = parse_count(self.params, "--params")
        d["tokens"] = parse_count(self.tokens, "--tokens")
        return d

    def train_config(self, lr: float, number: int) -> TrainConfig:
        cfg = TrainConfig(
            params=self.params, tokens=parse_count(self.tokens, "--tokens"), data=self.data, seed=self.seed,
            lr=lr, out=str(Path(self.out) / TRIALS_DIR / str(number)), device=self.device,
            progress=self.progress and self.jobs == 1, extra={"tune": str(self.out), "trial": number},
        )
        for name in ("seq_len", "batch_size", "val_points"):
            if getattr(self, name) is not None:
                setattr(cfg, name, getattr(self, name))
        return cfg


def _train_trial(cfg_dict: dict, threads: int | None) -> dict:
    """One trial's run (in this process or a pool worker). Returns the run record; an
    exception becomes {"status": "failed", "error": ...} so one bad run never stops the study,
    except a UserError, which is the user's to fix and stops it."""
    from scaling.train import TrainingRun, _first_line

    if threads:
        import os

        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)  # this worker's share: a cap for threads_for
        torch.set_num_threads(threads)
    try:
        return TrainingRun(TrainConfig.from_dict(cfg_dict)).fit()
    except UserError as e:
        return {"status": "usererror", "error": str(e)}
    except Exception as e:  # the run's own record says "failed" with the traceback
        return {"status": "failed", "error": _first_line(e)}


class Tuner:
    def __init__(self, cfg: TuneConfig, log=None):
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.stopped = False  # a trial stopped early: finish the running ones, ask no more

    # ------------------------------------------------------------ set-up
    def _rule(self) -> tuple[float, int]:
        """(rule-of-N lr, non-embedding params) for this size on this data; also fails fast
        on a bad corpus or a budget smaller than one batch, before any trial is asked for."""
        from scaling.data import TokenShards
        from scaling.train import make_plan, resolve_data

        shards = TokenShards.open(resolve_data(self.cfg.data), "train")
        probe = self.cfg.train_config(lr=self.cfg.lr_min, number=0)
        probe.lr = None
        plan = make_plan(probe, shards.vocab_size)
        return plan.lr, plan.model.n_params(embeddings=False)

    def _study(self):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = JournalStorage(JournalFileBackend(str(self.out / JOURNAL)))
        name = f"lr-{self.cfg.params}"
        ident = self.cfg.identity()
        names = optuna.get_all_study_names(storage)
        if names and name not in names:
            raise UserError(f"{self.out / JOURNAL}: holds another study ({', '.join(names)}); use a new --out")
        if name not in names:
            study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
            study.set_user_attr("config", ident)
        else:
            study = optuna.load_study(study_name=name, storage=storage)
            old = study.user_attrs.get("config", {})
            diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
            if diff:
                detail = ", ".join(f"{k}: {old.get(k)!r} -> {ident.get(k)!r}" for k in diff[:4])
                raise UserError(f"{self.out}: existing study has different settings ({detail}); use a new --out")
        return study

    def _sampler(self, n_existing: int):
        import optuna

        # Few trials: TPE's default 10 random start-up trials would make the whole study random.
        # Seeded by the trial count so a resumed study does not redraw its first lrs.
        return optuna.samplers.TPESampler(
            seed=self.cfg.seed + n_existing, n_startup_trials=min(10, max(3, self.cfg.trials // 2)),
            constant_liar=self.cfg.jobs > 1,
        )

    # -------------------------------------------------------------- run
    def run(self) -> dict | None:
        import optuna
        from optuna.trial import TrialState

        self.out.mkdir(parents=True, exist_ok=True)
        lock = open(self.out / LOCK, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{self.out}: another `scaling tune` is running on this directory") from None
        try:
            rule_lr, n_nonembed = self._rule()
            study = self._study()
            self.rule_lr, self.n_nonembed = rule_lr, n_nonembed
            trials = study.get_trials(deepcopy=False)
            if not trials and self.cfg.lr_min <= rule_lr <= self.cfg.lr_max:
                study.enqueue_trial({"lr": rule_lr}, user_attrs={"rule": True})
            study.sampler = self._sampler(len(trials))
            dist = optuna.distributions.FloatDistribution(self.cfg.lr_min, self.cfg.lr_max, log=True)

            # Trials a killed command left RUNNING: their run dirs resume from the checkpoint.
            todo = [(t.number, t.params["lr"]) for t in trials if t.state == TrialState.RUNNING and "lr" in t.params]
            # A WAITING trial (the enqueued rule lr) is not counted: the next ask() takes it.
            remaining = max(0, self.cfg.trials - sum(1 for t in trials if t.state != TrialState.WAITING))
            if todo:
                self.log(f"resuming {len(todo)} interrupted trial(s): {', '.join(str(n) for n, _ in todo)}")
            if remaining == 0 and not todo:
                self.log(f"study has {len(trials)} trial(s), --trials {self.cfg.trials}: nothing to do")
            self._execute(study, dist, todo, remaining)
            return self._finish(study)
        finally:
            lock.close()

    def _ask(self, study, dist) -> tuple[int, float]:
        trial = study.ask({"lr": dist})
        return trial.number, trial.params["lr"]

    def _execute(self, study, dist, todo: list, remaining: int) -> None:
        self._done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
        self._total = self._done + len(todo) + remaining
        if self.cfg.jobs == 1:
            for number, lr in todo:
                self._tell(study, number, lr, _train_trial(self.cfg.train_config(lr, number).to_dict(), None))
                if self.stopped:
                    return
            for _ in range(remaining):
                if self.stopped:
                    return
                number, lr = self._ask(study, dist)
                self._tell(study, number, lr, _train_trial(self.cfg.train_config(lr, number).to_dict(), None))
            return
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        threads = max(1, (os.cpu_count() or 1) // self.cfg.jobs)
        # spawn: a forked child would inherit this process's torch/Lightning state and threads.
        with ProcessPoolExecutor(self.cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
            running = {}

            def submit(number, lr):
                fut = pool.submit(_train_trial, self.cfg.train_config(lr, number).to_dict(), threads)
                running[fut] = (number, lr)

            queue = list(todo)
            while running or ((queue or remaining) and not self.stopped):
                while len(running) < self.cfg.jobs and (queue or remaining) and not self.stopped:
                    if queue:
                        submit(*queue.pop(0))
                    else:
                        submit(*self._ask(study, dist))
                        remaining -= 1
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    number, lr = running.pop(fut)
                    self._tell(study, number, lr, fut.result())

    def _tell(self, study, number: int, lr: float, rec: dict) -> None:
        from optuna.trial import TrialState

        status = rec.get("status")
        loss = ((rec.get("val") or {}).get("mixed") or {}).get("loss")
        if status == "usererror":
            study.tell(number, state=TrialState.FAIL)
            raise UserError(rec["error"])
        if status == "running":
            # Stopped before its budget (a signal): leave the trial RUNNING; a rerun resumes it.
            self.stopped = True
            self.log(f"trial {number}  lr {lr:.3g}  stopped: {rec.get('error')}; rerun to resume")
            return
        if status == "completed" and loss is not None and math.isfinite(loss):
            study.tell(number, loss)
        elif status == "diverged":
            study.tell(number, state=TrialState.PRUNED)
        else:
            study.tell(number, state=TrialState.FAIL)
        self._done += 1
        try:
            best = study.best_trial
            best_s = f"best {best.value:.4f} @ lr {best.params['lr']:.3g}"
        except ValueError:
            best_s = "no completed trial yet"
        what = f"loss {loss:.4f}" if status == "completed" and loss is not None else (rec.get("error") or status)
        wall = rec.get("wall_time_s")
        self.log(f"trial {number} [{self._done}/{self._total}]  lr {lr:.3g}  {status}  {what}"
                 f"{f'  {wall:.0f}s' if wall else ''}  ({best_s})")

    # ----------------------------------------------------------- results
    def rows(self, study) -> list[dict]:
        """One row per trial: Optuna's value, the run's own status and error (run.json is the
        source of truth for what happened to a run; the journal only knows the trial state)."""
        from scaling.rundir import read_run_json

        rows = []
        for t in study.get_trials(deepcopy=False):
            try:
                rec = read_run_json(self.out / TRIALS_DIR / str(t.number)) or {}
            except UserError:
                rec = {}
            status = rec.get("status") or t.state.name.lower()
            if t.state.name == "RUNNING":
                status = "running"
            rows.append({
                "trial": t.number, "lr": t.params.get("lr"), "loss": t.value, "status": status,
                "rule": bool(t.user_attrs.get("rule")), "error": rec.get("error"),
            })
        return rows

    def _finish(self, study) -> dict | None:
        from optuna.trial import TrialState

        self.table = self.rows(study)
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not done:
            return None
        best = min(done, key=lambda t: t.value)
        rule_trial = next((r for r in self.table if r["rule"] and r["loss"] is not None), None)
        record = {
            "params": self.cfg.params,
            "n_params_nonembed": self.n_nonembed,
            "tokens": parse_count(self.cfg.tokens, "--tokens"),
            "lr": best.params["lr"],
            "loss": best.value,
            "trial": best.number,
            "run": str(Path(TRIALS_DIR) / str(best.number)),
            "n_trials": len(study.get_trials(deepcopy=False)),
            "n_completed": len(done),
            "lr_rule": self.rule_lr,
            "lr_rule_loss": rule_trial["loss"] if rule_trial else None,
            "lr_range": [self.cfg.lr_min, self.cfg.lr_max],
            "at_range_edge": _at_edge(best.params["lr"], self.cfg.lr_min, self.cfg.lr_max),
            "config": self.cfg.identity(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(self.out / BEST, record)
        return record


def _at_edge(lr: float, lo: float, hi: float) -> bool:
    """Best lr within ~10% (in log space) of a bound: the optimum may lie outside the range."""
    span = math.log(hi / lo)
    return math.log(lr / lo) < 0.1 * span or math.log(hi / lr) < 0.1 * span


def format_table(rows: list[dict], best_trial: int | None) -> str:
    lines = [f"{'trial':>5}  {'lr':>10}  {'val loss':>9}  status"]
    for r in sorted(rows, key=lambda r: (r["lr"] is None, r["lr"] or 0)):
        lr = f"{r['lr']:.4g}" if r["lr"] is not None else "-"
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        note = "  <- best" if r["trial"] == best_trial else ""
        note += "  (rule of N)" if r["rule"] else ""
        err = f"  {r['error']}" if r["error"] and r["status"] != "completed" else ""
        lines.append(f"{r['trial']:>5}  {lr:>10}  {loss:>9}  {r['status']}{err}{note}")
    return "\n".join(lines)
