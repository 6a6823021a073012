"""`scaling generate RUN --prompt TEXT`: text from a kept model: a CLM continuation, or a
denoising rewrite with the prompt's marked gaps filled (scaling/use/generate.py says how)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling.use.generate import GAP, MODES, generate
from scaling.use.load import describe, load_run


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="continue a prompt (CLM) or fill its marked gaps (denoising) with a kept model",
        description="Generate with the model a completed run kept. --mode clm: the encoder reads [CLM] + "
                    f"the prompt and the decoder continues it. --mode denoise: mark each gap with {GAP}; the "
                    "decoder rewrites the prompt, writing only at the gaps. Greedy unless --temperature > 0.")
    p.add_argument("run", type=Path, help="run directory of a completed run (its model.safetensors)")
    p.add_argument("--prompt", required=True, help="the text to continue, or with gaps to fill")
    p.add_argument("--mode", choices=MODES, default="clm", help="clm (default): continue; denoise: fill gaps")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="most tokens the model writes (CLM: the continuation; denoise: all gaps together); "
                        "default: what the decoder's window leaves")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sampled")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--gap", default=GAP, help=f"the gap marker in denoise mode (default {GAP})")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", action="store_true", help="the generation as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kept = load_run(args.run, args.device)
    g = generate(kept, args.prompt, args.mode, args.max_tokens, args.temperature, args.top_k, args.seed, args.gap)
    print(describe(kept), file=sys.stderr)
    if args.json:
        print(json.dumps({"mode": g.mode, "prompt": args.prompt, "text": g.text, "fills": g.fills, "ids": g.ids,
                          "stopped": g.stopped}))
    elif g.mode == "clm":
        # Decoded whole: a tokenizer may join a piece's first token to the text before it
        # (SentencePiece's leading space), and a spoken-form run reads its prompt normalised.
        print(kept.decode(g.prompt_ids + g.ids))
    else:
        print(g.text)
        for i, fill in enumerate(g.fills, 1):
            print(f"gap {i}: {fill!r}", file=sys.stderr)
    return 0
