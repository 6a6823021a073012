"""`load_run(run_dir)`: a completed run's kept model, ready for inference.

    kept = scaling.load_run("runs/my-sweep/3M-60M")            # CPU; device="cuda" for a GPU
    kept.model        EncoderDecoder (DecoderOnly for a decoder-only run) in eval mode, on kept.device
    kept.tokenizer    the run's tokenizer (.encode_batch, .decode)
    kept.config       its ModelConfig; kept.objective its ObjectiveConfig; kept.special_ids
    kept.validate()   the run's validation score, computed as the run computed it

Every missing or damaged piece is a UserError naming the file (a run trained with
keep_weights = false, an unfinished run, a run directory from before weights were kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.base.rundir import KEPT_FORMAT, MODEL_JSON, TOKENIZER_DIR, WEIGHTS, read_run_json
from scaling.base.shapes import ModelConfig
from scaling.data.objectives import ObjectiveConfig
from scaling.data.prepare import spoken_form
from scaling.data.shards import load_tokenizer
from scaling.train.model import DecoderOnly, EncoderDecoder, build_model
from scaling.train.validation import VAL_CHUNK, task_sums, val_objective, val_scores


@dataclass
class KeptModel:
    """A kept model, loaded: the modules, the tokenizer and what the run trained them on."""

    path: Path
    model: EncoderDecoder | DecoderOnly
    tokenizer: object
    config: ModelConfig
    objective: ObjectiveConfig
    special_ids: dict
    info: dict = field(repr=False)              # model.json
    record: dict | None = field(default=None, repr=False)   # run.json, when the directory has one

    @property
    def device(self) -> torch.device:
        return self.model.tok_emb.weight.device

    @property
    def spoken(self) -> bool:
        """The shards were in AlexaTM's spoken form: text must be normalised the same way."""
        return bool(self.info.get("spoken"))

    def normalise(self, texts: list[str]) -> list[str]:
        """The texts as `scaling prepare` wrote the run's shards: in spoken form if they were."""
        return [spoken_form(t) for t in texts] if self.spoken else list(texts)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, as `scaling prepare` made the run's shards (no <eos>)."""
        return self.tokenizer.encode_batch(self.normalise(texts))

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def validate(self, data=None, examples: int | None = None) -> dict:
        """The run's final validation score, recomputed: the same validation examples of the
        run's shards (`data`, default the run's), the same function the run scored them with
        (scaling/train/validation.py). Keys as metrics.parquet's: val_loss, val_loss_denoise, ..."""
        cfg = TrainConfig.from_dict(self.record["config"]) if self.record else None
        data = data or self.info.get("data")
        if not data:
            raise UserError(f"{self.path}: run.json names no shard directory; pass data=")
        n = examples or (cfg.val_examples if cfg else 512)
        obj, bytes_per_token = val_objective(data, self.objective)
        sums = task_sums(self.model, obj, n, VAL_CHUNK, self.device)
        return val_scores(sums, n, self.objective.clm_ratio, bytes_per_token, obj.n_windows)


def _why_no_weights(run_dir: Path) -> str:
    """Why a directory has no model.safetensors, in the words a user acts on."""
    rec = read_run_json(run_dir)
    if rec is None:
        return f"{run_dir}: not a run directory with a kept model (no {WEIGHTS}, no run.json)"
    status = rec.get("status")
    if status != "completed":
        return (f"{run_dir}: no kept model: the run is {status} (weights are kept when a run completes; "
                f"rerun it to finish)" if status in ("running", "preempted", "stopped")
                else f"{run_dir}: no kept model: the run is {status} (weights are kept when a run completes)")
    if not (rec.get("config") or {}).get("keep_weights", True):
        return f"{run_dir}: no kept model: the run was trained with keep_weights = false"
    return f"{run_dir}: no {WEIGHTS} (the run completed before weights were kept, or the file was removed)"


def _read_info(run_dir: Path) -> dict:
    p = run_dir / MODEL_JSON
    try:
        info = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: missing; the kept model cannot be rebuilt without it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != KEPT_FORMAT:
        raise UserError(f"{p}: not a kept model's description (format {KEPT_FORMAT} expected)")
    return info


def _device(device) -> torch.device:
    try:
        d = torch.device(device or "cpu")
    except RuntimeError:
        raise UserError(f"device {device!r}: choose cpu or cuda (cuda:N for one of several GPUs)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device}: no CUDA device on this machine; use cpu")
    if d.type not in ("cpu", "cuda"):
        raise UserError(f"device {device}: choose cpu or cuda")
    return d


def load_run(run_dir, device: str | torch.device = "cpu") -> KeptModel:
    """The kept model of a completed run directory, in eval mode on `device` (cpu, cuda, cuda:1)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    dev = _device(device)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise UserError(_why_no_weights(run_dir))
    info = _read_info(run_dir)
    try:
        cfg = ModelConfig(**info["model"])
        objective = ObjectiveConfig(**info["objective"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{run_dir / MODEL_JSON}: model or objective unreadable ({e})") from None
    tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise UserError(f"{run_dir / TOKENIZER_DIR}: vocabulary of {tokenizer.vocab_size}, the model has {cfg.vocab_size}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights}: not readable safetensors ({e})") from None
    model = build_model(cfg, pad_id=int(info["pad_id"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{weights}: does not fit the shape in {MODEL_JSON} ({str(e).splitlines()[0]})") from None
    model.to(dev).eval()
    special = dict(info.get("special_ids") or {})
    return KeptModel(path=run_dir, model=model, tokenizer=tokenizer, config=cfg, objective=objective,
                     special_ids=special, info=info, record=read_run_json(run_dir))


def describe(kept: KeptModel) -> str:
    """One line: what was loaded (the commands print it on stderr)."""
    val = (kept.info.get("val") or {}).get("mixed") or {}
    loss = f", final val loss {val['loss']:.4f}" if val else ""
    return f"{kept.path}: {kept.config.describe()}; seq_len {kept.objective.seq_len}{loss}"

