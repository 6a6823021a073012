"""What a plan is asked for: `PlanRequest`, the plain values of `scaling plan`'s arguments
(the size or compute, the law, the FLOP count, the serving, the cost assumptions), and the
one parser that reads them from a command line. `scaling plan` and `scaling report --plan
ARGS` both read their arguments with it, so the report takes exactly the plan's arguments; a
notebook makes a `PlanRequest(params="20B", tokens="1T")` directly. Nothing here checks the
values: `scaling.plan.record.build` does, naming the flag of a bad one.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from scaling.base.errors import UserError

HELP = "extrapolate a fit to a training plan and its cost"
DESCRIPTION = ("Predicted loss, compute, compute-optimal allocation and cost of a training plan "
               "(e.g. --params 20B --tokens 1T), with intervals from the fit's bootstrap.")


@dataclass(frozen=True)
class PlanRequest:
    """The values of `scaling plan`'s arguments, as given (counts as numbers or strings like
    "20B"); the defaults are the command's."""

    params: str | float | None = None            # model size N
    tokens: str | float | None = None            # training tokens D
    compute: str | float | None = None           # training FLOPs alone (the plan is the optimum)
    fit: str | None = None                       # fit.json; None: the default law
    task_fit: str | None = None                  # a fit.json with a task law, predicted at --fit's plan
    # How compute is counted: encdec | 6nd, and the encoder-decoder formula's window, noise and
    # vocabulary. None: the fit's own count (its fit.json's flop_count), else encdec with
    # AlexaTM's window (1024), noise (0.15) and vocabulary (150000); a value given replaces the
    # fit's (scaling.plan.record.plan_count).
    flops: str | None = None
    seq_len: int | None = None
    noise_density: float | None = None
    vocab: str | int | None = None
    inference_tokens: str | float | None = None  # tokens served over the model's life
    input_len: int = 512
    output_len: int = 128
    target_loss: float | None = None
    objective: str = "flops"                     # flops | gpu-hours
    mfu: float = 0.40
    inference_mfu: float | None = None           # None: mfu
    pue: float = 1.1
    grid_intensity: float = 0.385
    a100_power: float = 0.40
    h100_power: float = 0.70
    a100_price: float = 2.0
    h100_price: float = 4.0
    compare: str | None = None                   # None: no comparison; "": the famous models; else PLANS.toml too

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PlanRequest":
        """The request in parsed arguments (the command's own, such as --json, are left out)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


_D = PlanRequest()


def add_plan_parser(subparsers) -> argparse.ArgumentParser:
    """The `plan` sub-command's parser, every argument of `scaling plan` on it."""
    p = subparsers.add_parser("plan", help=HELP, description=DESCRIPTION)
    p.add_argument("--params", default=_D.params, help="model size N, e.g. 20B")
    p.add_argument("--tokens", default=_D.tokens, help="training tokens D, e.g. 1T")
    p.add_argument("--compute", default=_D.compute, help="training FLOPs alone, e.g. 1.2e23 (plan = the optimum)")
    p.add_argument("--fit", default=_D.fit, metavar="FILE",
                   help="fit.json from `scaling fit --out` (default: the Chinchilla 240-point refit)")
    p.add_argument("--task-fit", default=_D.task_fit, metavar="FILE",
                   help="a fit.json of `scaling fit --target task.NAME.bpb`: its two-step task law predicts the "
                        "task loss and accuracy at the plan that --fit (the LM loss's law) makes")
    p.add_argument("--flops", default=_D.flops, choices=("encdec", "6nd"),
                   help="how compute is counted (default: the fit's own count; without --fit, the "
                        "encoder-decoder formula)")
    p.add_argument("--seq-len", type=int, default=_D.seq_len,
                   help="source window length (default: the fit's, else 1024)")
    p.add_argument("--noise-density", type=float, default=_D.noise_density,
                   help="denoising noise (default: the fit's, else 0.15)")
    p.add_argument("--vocab", default=_D.vocab,
                   help="vocabulary for the FLOP formula (default: the fit's, else AlexaTM's 150000)")
    i = p.add_argument_group("inference in the bill (Sardana et al. 2023)")
    i.add_argument("--inference-tokens", default=_D.inference_tokens, metavar="T",
                   help="tokens the model will serve over its life, input + output (e.g. 2T): find the N, D "
                        "of least training + inference compute at the plan's loss")
    i.add_argument("--input-len", type=int, default=_D.input_len,
                   help="per request: tokens the encoder reads (default 512)")
    i.add_argument("--output-len", type=int, default=_D.output_len, help="per request: tokens generated (default 128)")
    i.add_argument("--target-loss", type=float, default=_D.target_loss,
                   help="the loss to reach (instead of --params/--tokens or --compute)")
    i.add_argument("--objective", default=_D.objective, choices=("flops", "gpu-hours"),
                   help="minimise FLOPs (default) or GPU-hours (serving FLOPs weighed by --inference-mfu)")
    g = p.add_argument_group("cost assumptions")
    g.add_argument("--mfu", type=float, default=_D.mfu, help="model FLOP utilisation in training (default 0.40)")
    g.add_argument("--inference-mfu", type=float, default=_D.inference_mfu,
                   help="model FLOP utilisation in serving (default: --mfu)")
    g.add_argument("--pue", type=float, default=_D.pue, help="data-centre PUE (default 1.1)")
    g.add_argument("--grid-intensity", type=float, default=_D.grid_intensity, help="kg CO2 per kWh (default 0.385)")
    g.add_argument("--a100-power", type=float, default=_D.a100_power, help="A100 board power, kW (default 0.40)")
    g.add_argument("--h100-power", type=float, default=_D.h100_power, help="H100 board power, kW (default 0.70)")
    g.add_argument("--a100-price", type=float, default=_D.a100_price, help="USD per A100-hour (default 2.0)")
    g.add_argument("--h100-price", type=float, default=_D.h100_price, help="USD per H100-hour (default 4.0)")
    p.add_argument("--compare", nargs="?", const="", default=_D.compare, metavar="PLANS.toml",
                   help="place GPT-3, MT-NLG, PaLM, Chinchilla, AlexaTM (and the [[plan]] tables of "
                        "PLANS.toml: name, params, tokens) on the fitted frontier")
    # The command's outputs: accepted after `scaling report --plan` too (and ignored there),
    # since the report takes every argument `scaling plan` takes.
    p.add_argument("--plots", default=None, metavar="DIR", help="write DIR/plan.html (N-D plane with the plans)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE")
    return p


def parse_plan_args(argv: list[str], prog: str = "scaling plan") -> PlanRequest:
    """`scaling plan`'s arguments, read by its own parser (for `scaling report --plan`); a bad
    one is a one-line UserError, not argparse's usage and exit."""
    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UserError(f"{prog}: {message} (the plan's arguments are `scaling plan`'s: see "
                            "`scaling plan --help`)")

    parser = Parser(prog=prog.split()[0], add_help=False)
    add_plan_parser(parser.add_subparsers())
    return PlanRequest.from_args(parser.parse_args(["plan", *argv]))
