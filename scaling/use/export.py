"""A kept model as a Hugging Face `transformers` model (`scaling export RUN --to hf`).

The lab's encoder-decoder (scaling/train/model.py) maps exactly onto `transformers`'
Blenderbot (BlenderbotForConditionalGeneration, the 400M-distill/3B family, not
BlenderbotSmall): pre-LN encoder and decoder layers with a final LayerNorm each, learned
position tables of their own (no offset), one token embedding shared by encoder and decoder,
no embedding LayerNorm, embeddings unscaled (scale_embedding = false), GELU (exact, erf)
feed-forward of d_ff = 4 d, biased projections, LayerNorm eps 1e-5, an LM head tied to the
embedding or not, and a final_logits_bias of zeros. Only the packed projections are split:
self-attention's qkv into q_proj, k_proj, v_proj, cross-attention's kv into k_proj, v_proj.

BART and mBART do not map: BART is post-LN, and both put a LayerNorm on the embeddings
(layernorm_embedding) and offset positions by 2; T5 uses relative position buckets, RMSNorm
without biases and no learned positions. The export is checked, before anything is written,
by the logits of both models on the same inputs (`check`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from scaling.base.errors import UserError
from scaling.base.rundir import TOKENIZER_DIR, temp_dir_beside

TARGETS = ("hf",)
TOLERANCE = 1e-4   # max |logit difference| in fp32: equal up to the order of float sums


# transformers is imported where an export runs: an optional dependency (the [hf] extra),
# not needed to load, score or generate.
def hf_config(kept):
    from transformers import BlenderbotConfig

    c, ids = kept.config, kept.objective
    return BlenderbotConfig(
        vocab_size=c.vocab_size, d_model=c.d_model, max_position_embeddings=c.max_len,
        encoder_layers=c.n_enc_layers, decoder_layers=c.n_dec_layers,
        encoder_attention_heads=c.n_heads, decoder_attention_heads=c.n_heads,
        encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff, activation_function="gelu", scale_embedding=False,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        pad_token_id=kept.model.pad_id, eos_token_id=ids.eos_id, bos_token_id=ids.clm_id,
        decoder_start_token_id=ids.pad_id, forced_eos_token_id=None,
        tie_word_embeddings=c.tied_embeddings,
    )


def _linear(sd: dict, prefix: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    sd[f"{prefix}.weight"] = weight
    # A model built without biases (ModelConfig.bias = false) is the same with zero biases.
    sd[f"{prefix}.bias"] = torch.zeros(weight.shape[0]) if bias is None else bias


def _split(sd: dict, prefix: str, names: tuple[str, ...], linear) -> None:
    ws = linear.weight.detach().chunk(len(names), dim=0)
    bs = linear.bias.detach().chunk(len(names), dim=0) if linear.bias is not None else [None] * len(names)
    for name, w, b in zip(names, ws, bs):
        _linear(sd, f"{prefix}.{name}", w, b)


def _norm(sd: dict, prefix: str, ln) -> None:
    sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = ln.weight.detach(), ln.bias.detach()


def hf_state_dict(model) -> dict:
    """The lab's weights under Blenderbot's names (BlenderbotForConditionalGeneration)."""
    sd: dict = {}
    lin = lambda p, m: _linear(sd, p, m.weight.detach(), None if m.bias is None else m.bias.detach())  # noqa: E731
    sd["model.shared.weight"] = model.tok_emb.weight.detach()
    sd["model.encoder.embed_tokens.weight"] = sd["model.decoder.embed_tokens.weight"] = sd["model.shared.weight"]
    sd["model.encoder.embed_positions.weight"] = model.enc_pos.weight.detach()
    sd["model.decoder.embed_positions.weight"] = model.dec_pos.weight.detach()
    for i, layer in enumerate(model.enc_layers):
        p = f"model.encoder.layers.{i}"
        _norm(sd, f"{p}.self_attn_layer_norm", layer.ln1)
        _split(sd, f"{p}.self_attn", ("q_proj", "k_proj", "v_proj"), layer.attn.qkv)
        lin(f"{p}.self_attn.out_proj", layer.attn.out)
        _norm(sd, f"{p}.final_layer_norm", layer.ln2)
        lin(f"{p}.fc1", layer.ff.up)
        lin(f"{p}.fc2", layer.ff.down)
    for i, layer in enumerate(model.dec_layers):
        p = f"model.decoder.layers.{i}"
        _norm(sd, f"{p}.self_attn_layer_norm", layer.ln1)
        _split(sd, f"{p}.self_attn", ("q_proj", "k_proj", "v_proj"), layer.self_attn.qkv)
        lin(f"{p}.self_attn.out_proj", layer.self_attn.out)
        _norm(sd, f"{p}.encoder_attn_layer_norm", layer.ln2)
        lin(f"{p}.encoder_attn.q_proj", layer.cross_attn.q)
        _split(sd, f"{p}.encoder_attn", ("k_proj", "v_proj"), layer.cross_attn.kv)
        lin(f"{p}.encoder_attn.out_proj", layer.cross_attn.out)
        _norm(sd, f"{p}.final_layer_norm", layer.ln3)
        lin(f"{p}.fc1", layer.ff.up)
        lin(f"{p}.fc2", layer.ff.down)
    _norm(sd, "model.encoder.layer_norm", model.enc_norm)
    _norm(sd, "model.decoder.layer_norm", model.dec_norm)
    sd["lm_head.weight"] = (model.tok_emb if model.lm_head is None else model.lm_head).weight.detach()
    sd["final_logits_bias"] = torch.zeros(1, model.cfg.vocab_size)
    return {k: v.float().cpu() for k, v in sd.items()}


def to_hf(kept):
    """The kept model as a BlenderbotForConditionalGeneration (CPU, fp32, eval mode)."""
    if kept.config.decoder_only:
        raise UserError(f"{kept.path}: a {kept.config.arch} run: export writes encoder-decoders (Blenderbot) only; "
                        "load, score and generate read decoder-only runs")
    from transformers import BlenderbotForConditionalGeneration

    hf = BlenderbotForConditionalGeneration(hf_config(kept))
    missing, unexpected = hf.load_state_dict(hf_state_dict(kept.model), strict=False)
    if missing or unexpected:   # a transformers release that renamed a weight
        raise UserError(f"transformers' Blenderbot no longer has the weights this export maps "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return hf.eval()


@torch.no_grad()
def check(kept, hf, seed: int = 0) -> float:
    """Max |logit difference| of the two models on the same random batch, encoder padding
    included; raises if it is over TOLERANCE."""
    g = torch.Generator().manual_seed(seed)
    c, pad = kept.config, kept.model.pad_id
    B, Te, Td = 3, max(2, c.max_len - 3), c.max_len
    enc = torch.randint(0, c.vocab_size, (B, Te), generator=g)
    enc[enc == pad] = (pad + 1) % c.vocab_size
    enc[1, Te // 2:] = pad   # a padded row, as CLM examples are
    dec = torch.randint(0, c.vocab_size, (B, Td), generator=g)
    dec[:, 0] = kept.objective.pad_id
    model = kept.model.float().cpu()
    ours = model(enc, dec)
    theirs = hf(input_ids=enc, attention_mask=(enc != pad).long(), decoder_input_ids=dec,
                decoder_attention_mask=torch.ones_like(dec)).logits
    diff = float((ours - theirs).abs().max())
    if not diff <= TOLERANCE:
        raise UserError(f"export check failed: logits differ by {diff:.3g} (> {TOLERANCE:g}); nothing written")
    return diff


def export_hf(kept, out) -> tuple[Path, float]:
    """Write the checked Blenderbot to `out` (save_pretrained: config.json, model.safetensors)
    with the run's tokenizer files beside it, whole or not at all. Returns (out, max diff)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose a new directory")
    hf = to_hf(kept)
    diff = check(kept, hf)
    tmp = temp_dir_beside(out) if out.parent.exists() else None
    if tmp is None:
        raise UserError(f"{out.parent}: no such directory")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # one line of output, not a bar for one file
    try:
        hf.save_pretrained(tmp)
        for f in (kept.path / TOKENIZER_DIR).iterdir():
            if f.name != "meta.json":
                shutil.copy2(f, tmp / f.name)
        shutil.copy2(kept.path / TOKENIZER_DIR / "meta.json", tmp / "scaling_tokenizer_meta.json")
        hf_tok = getattr(kept.tokenizer, "hf", None)
        if hf_tok is not None:
            # With the special tokens the lab added (pad, [CLM]) at the ids the model was
            # trained with: the user's own file stops short of them.
            (tmp / "tokenizer.json").write_text(hf_tok.to_str(), encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, diff
