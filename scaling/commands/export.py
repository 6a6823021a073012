"""`scaling export RUN --to hf --out DIR`: a kept model as a Hugging Face `transformers`
Blenderbot (the architecture it maps onto exactly; scaling/use/export.py says why), written
only once its logits equal the lab model's."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling.base.errors import UserError
from scaling.use.export import TARGETS, TOLERANCE, export_hf
from scaling.use.load import load_run


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="a kept model as a Hugging Face transformers model, checked by equal logits",
        description="Write the model a completed run kept as a transformers BlenderbotForConditionalGeneration "
                    "(save_pretrained), with the run's tokenizer files, after checking that both models give "
                    f"the same logits (within {TOLERANCE:g}). Needs the transformers package.")
    p.add_argument("run", type=Path, help="run directory of a completed run (its model.safetensors)")
    p.add_argument("--to", choices=TARGETS, default="hf", help="hf: Hugging Face transformers (the only target)")
    p.add_argument("--out", type=Path, required=True, help="a new directory for the exported model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import transformers  # noqa: F401  (the check, before the model loads)
    except ImportError:
        raise UserError("scaling export: needs the transformers package (pip install 'scaling-lab[hf]')") from None
    kept = load_run(args.run)
    out, diff = export_hf(kept, args.out)
    print(f"{out}: transformers BlenderbotForConditionalGeneration; logits equal the run's within {diff:.1e}")
    return 0
