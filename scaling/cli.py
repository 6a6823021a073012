"""`scaling` command line: a thin dispatcher over scaling/commands/<name>.py.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed args and returning an exit code. Only the module of
the command asked for is imported, so `scaling fit` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from scaling import __version__
from scaling.base.errors import UserError, one_line

# Order is the order of the data flow, and the order shown in --help.
COMMANDS = {
    "prepare": "turn a corpus into token shards",
    "train": "train one encoder-decoder run",
    "sweep": "plan, launch, watch, collect, extend and cancel grids of runs",
    "fit": "fit Chinchilla's three approaches to a results table",
    "compare": "recipes compared: the compute one needs to match another's loss, with intervals",
    "plan": "extrapolate a fit to a training plan and its cost",
    "design": "the next runs, chosen to narrow the interval of the plan's loss, a or N_opt",
    "report": "one self-contained HTML report: runs, fits, held-out check, plan, figures",
    "plot": "one figure of a sweep, its fit or a plan, as HTML, PNG or SVG",
    "tune": "per-size learning-rate (and batch, beta2) search with Optuna",
    "eval": "score kept models on downstream tasks (bpb of the answer, multiple-choice accuracy)",
    "score": "a kept model's loss and bits per byte on each document of a file",
    "generate": "continue a prompt (CLM) or fill its marked gaps (denoising) with a kept model",
    "export": "a kept model as a Hugging Face transformers model, checked by equal logits",
}


def _load(name: str):
    try:
        return importlib.import_module(f"scaling.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"scaling.commands.{name}":
            return None
        raise


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in this project's form: one `error:` line, exit code 2 (the
    usage is one --help away). Sub-commands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = Parser(
        prog="scaling",
        description="Compute-optimal scaling laboratory for encoder-decoder Transformers: "
        "corpus -> token shards (prepare) -> runs (train, sweep) -> results table (sweep collect) "
        "-> fits (fit) -> plan (plan) -> pictures and report (plot, report).",
    )
    parser.add_argument("--version", action="version", version=f"scaling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Import only the command asked for: the one seam where the rest of the package is loaded
    # (`scaling train` loads torch, `scaling plan` never does). `scaling --help` lists the
    # commands from COMMANDS without importing any of them.
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if name != wanted:
            sub.add_parser(name, help=help_text)
            continue
        module = _load(name)
        if module is None:
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help, --version (0) or a bad argument (2, its line printed)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()   # here, so that a reader gone by now is caught below
        return code
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise   # another pipe broke (a worker, stderr): that is an error, not the user's `| head`
        # The reader of stdout went away (`scaling sweep status --json DIR | head`): stop quietly,
        # as Unix tools do, and point stdout at /dev/null so the interpreter's last flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13   # SIGPIPE


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):   # no real file descriptor (captured output)
        return False


if __name__ == "__main__":
    sys.exit(main())
