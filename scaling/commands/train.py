"""`scaling train`: one run, trained to its token budget (resumes when the run dir has a checkpoint)."""

from __future__ import annotations

import argparse
import os

from scaling.base.config import TrainConfig, parse_count
from scaling.data.tasks import checked_eval_list
from scaling.train.run import TrainingRun


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one run (encoder-decoder or decoder-only)",
        description="Train one run to a token budget: an encoder-decoder with the AlexaTM mixed objective, or "
        "a decoder-only model (--arch decoder, causal LM by default). "
        "Rerunning the same command resumes from the run's last checkpoint; a completed run is not retrained.",
    )
    p.add_argument("--params", required=True, help="model size target: 2M, 350M, 1.5B, 20B or an integer")
    p.add_argument("--tokens", required=True, help="token budget D: 20M, 1B, ... (sequences x seq_len)")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/2M-20M")
    p.add_argument("--corpus", "--data", dest="data", default=None,
                   help="token shards dir from `scaling prepare` (a raw corpus is refused: prepare it first, "
                   "choosing its tokenizer); default: the embedded corpus")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: rule of N, see README)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per optimizer step, over all processes (default 16)")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="sequences per process per forward/backward (default: its whole share); "
                   "smaller accumulates gradients")
    p.add_argument("--seq-len", type=int, default=None, help="source window in tokens (default 128)")
    p.add_argument("--arch", default=None,
                   help="encdec (default), decoder (decoder-only, causal) or prefix-lm (decoder-only, bidirectional "
                   "over the prefix)")
    p.add_argument("--clm-ratio", type=float, default=None,
                   help="fraction of causal-LM examples (default 0.2 for encdec, 1.0 decoder-only)")
    p.add_argument("--warmup-frac", type=float, default=None)
    p.add_argument("--warmup-steps", type=int, default=None, help="fixed warmup steps (default: --warmup-frac of the steps)")
    p.add_argument("--schedule", choices=["cosine", "wsd"], default=None,
                   help="lr schedule after warmup: cosine to 10%% of peak (default), or wsd: constant, then a "
                        "cooldown (docs/training.md)")
    p.add_argument("--cooldown-frac", type=float, default=None, help="wsd: the cooldown's share of the steps (default 0.2)")
    p.add_argument("--cooldown-shape", choices=["1-sqrt", "linear"], default=None, help="wsd: the cooldown's shape (default 1-sqrt)")
    p.add_argument("--untied", action="store_true", help="untie the LM head from the token embedding")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "32", "bf16-mixed"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    p.add_argument("--devices", type=int, default=1,
                   help="processes per node: GPUs, or CPU processes with gloo (DDP when > 1)")
    p.add_argument("--strategy", choices=["auto", "ddp", "fsdp"], default="auto",
                   help="fsdp: shard weights, gradients and optimizer state over the processes (FSDP2); "
                   "default: DDP when several processes")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each Transformer block's activations in the backward (less memory)")
    p.add_argument("--val-points", type=int, default=None, help="log-spaced validation points (default 8)")
    p.add_argument("--eval", action="append", default=None, metavar="TASK",
                   help="a task scored at every validation point: docsum, nextsent (built in) or a .jsonl "
                   "task file (docs/tasks.md); repeat for several, or separate them with commas")
    p.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                   help="wall seconds between checkpoints (default 60)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-keep-weights", action="store_true",
                   help="keep no model when the run completes (default: model.safetensors, model.json, tokenizer/)")
    p.add_argument("--logger", choices=["none", "csv", "tensorboard", "wandb", "mlflow"], default="none",
                   help="a Lightning logger writing into the run directory (wandb offline unless WANDB_MODE=online)")
    p.add_argument("--resume", action="store_true",
                   help="resume from the last checkpoint (the default whenever the run directory has one)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    values = dict(params=args.params, tokens=parse_count(args.tokens, "--tokens"), out=args.out, data=args.data,
                  seed=args.seed, tied_embeddings=not args.untied, device=args.device, precision=args.precision,
                  compile=args.compile, devices=args.devices, strategy=args.strategy,
                  activation_checkpointing=args.activation_checkpointing, progress=not args.no_progress,
                  keep_weights=not args.no_keep_weights, logger=args.logger)
    for name in ("arch", "lr", "batch_size", "micro_batch", "seq_len", "clm_ratio", "warmup_frac", "val_points",
                 "warmup_steps", "schedule", "cooldown_frac", "cooldown_shape"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.checkpoint_every is not None:
        values["checkpoint_every_s"] = args.checkpoint_every
    if args.eval:
        names = [n.strip() for arg in args.eval for n in arg.split(",") if n.strip()]
        values["eval"] = checked_eval_list(names, "--eval", os.path.abspath)
    flags = {"checkpoint_every_s": "--checkpoint-every", "tied_embeddings": "--untied",
             "keep_weights": "--no-keep-weights"}
    cfg = TrainConfig.build(values, lambda key: flags.get(key, "--" + key.replace("_", "-")))
    cfg.whole_batches(cfg.tokens, "--tokens")   # before any data work
    cfg.check_logger_installed(lambda key: "--" + key)
    return cfg


def run(args: argparse.Namespace) -> int:
    import sys

    cfg = config_from_args(args)
    parse_count(cfg.params, "--params")  # fail fast on a bad size string, before any data work
    run = TrainingRun(cfg)
    rec = run.fit()
    val = (rec.get("val") or {}).get("mixed") or {}
    loss = f"val loss {val['loss']:.4f} nats/token ({val['bpb']:.4f} bits/byte)" if val else "no final validation"
    print(
        f"{rec['status']}: {rec['name']}  N={rec['n_params']:,}  D={rec['tokens_seen']:,}  "
        f"C={rec['flops']:.3g} FLOPs  {loss}  wall {rec.get('wall_time_s') or 0:.0f}s",
        file=sys.stdout,
    )
    return 0 if rec["status"] == "completed" else 1
