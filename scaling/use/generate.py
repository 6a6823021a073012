"""Text from a kept model, in the two ways it was trained (`scaling generate`):

* CLM: the encoder reads [CLM] + the prompt, as the CLM objective gives it a document's
  prefix; the decoder writes the continuation, until <eos> (the document's end) or
  --max-tokens.
* denoising: the objective drops spans of tokens WITHOUT marking where (no mask tokens), and
  the decoder rewrites the whole window. The user marks each gap with GAP ("[...]"): the
  encoder reads the prompt's tokens with the gaps removed, exactly what it saw in training.
  The model alone cannot know where the gaps were, so decoding rewrites the input with the
  tokens the user gave forced, and lets the model write only at the gaps: at least one token
  (a dropped span is at least one), until it chooses the token that follows the gap (the gap
  is closed there) or its budget is spent. Text either side of a gap is tokenized apart, as
  if the gap's tokens had been dropped; whitespace just before a marker goes with the
  missing words (byte-level tokens carry their leading space).

Decoding is greedy (temperature 0) or sampled (temperature, top-k, a seeded generator), one
token at a time with the decoder's KV cache (EncoderDecoder.decode(..., cache)). A decoder-only
model reads what the encoder would have read, then writes on (DecoderOnly.decode, its own
cache): the same two modes, the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from scaling.base.errors import UserError

GAP = "[...]"
MODES = ("clm", "denoise")


@dataclass
class Sampler:
    """How the next token is chosen: greedy at temperature 0, else sampled from the top k
    (0: all) of the softmax at `temperature`, with a generator seeded by `seed`."""

    temperature: float = 0.0
    top_k: int = 0
    seed: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.temperature >= 0:
            raise UserError(f"--temperature {self.temperature}: must be 0 (greedy) or more")
        if self.top_k < 0:
            raise UserError(f"--top-k {self.top_k}: must be 0 (all tokens) or more")

    def pick(self, logits: torch.Tensor) -> int:
        """The next token from one position's logits (V,)."""
        logits = logits.float()
        if self.temperature == 0:
            return int(torch.argmax(logits))
        if self.generator is None:
            self.generator = torch.Generator(device=logits.device).manual_seed(self.seed)
        logits = logits / self.temperature
        if 0 < self.top_k < logits.numel():
            kth = torch.topk(logits, self.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


@dataclass
class Generation:
    """What was generated: the text (the continuation, or the whole rewrite), its ids, and for
    denoising each gap's fill; why it stopped (eos, max_tokens, window)."""

    mode: str
    text: str
    ids: list[int]
    prompt_ids: list[int]
    fills: list[str]
    stopped: str


class _Decoder:
    """The decoder over one encoder output, fed token by token through its KV cache: `feed`
    adds tokens whose logits are not needed yet, `next_logits` runs what was fed."""

    def __init__(self, kept, enc_ids: list[int]):
        self.model = kept.model
        dev = kept.device
        enc = torch.tensor([enc_ids], dtype=torch.long, device=dev)
        self.memory, self.mask = self.model.encode(enc)
        self.cache = self.model.new_cache()
        self.pending = [kept.objective.pad_id]   # the decoder's start token, as in training
        self.device = dev

    def feed(self, ids: list[int]) -> None:
        self.pending += list(ids)

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        x = torch.tensor([self.pending], dtype=torch.long, device=self.device)
        self.pending = []
        return self.model.decode(x, self.memory, self.mask, self.cache)[0, -1]


class _Continuation(_Decoder):
    """A decoder-only model's stream, with _Decoder's feed / next_logits: the prompt (what the
    encoder would read) is run first on its own (a prefix LM reads it bidirectionally, as in
    training), then the tokens fed after it; no start token (DecoderOnly.logits)."""

    def __init__(self, kept, enc_ids: list[int]):
        self.model, self.device, self.pending = kept.model, kept.device, []
        self.cache = self.model.new_cache()
        with torch.no_grad():
            self.last = self.model.decode(torch.tensor([enc_ids], dtype=torch.long, device=self.device),
                                          self.cache)[0, -1]

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        if self.pending:
            x = torch.tensor([self.pending], dtype=torch.long, device=self.device)
            self.pending = []
            self.last = self.model.decode(x, self.cache)[0, -1]
        return self.last


def _stream(kept, enc_ids: list[int]) -> _Decoder:
    return _Continuation(kept, enc_ids) if kept.config.decoder_only else _Decoder(kept, enc_ids)


def _window(kept) -> int:
    return kept.objective.seq_len   # the decoder's positions (a decoder-only model's: after the prompt)


def generate_clm(kept, prompt: str, max_tokens: int | None, sampler: Sampler) -> Generation:
    ids = kept.encode([prompt])[0]
    # The prefix the objective's CLM examples hold (a decoder-only run of whole windows: the same)
    enc_len = kept.objective.scored().lengths[0]
    if len(ids) + 1 > enc_len:
        raise UserError(f"--prompt: {len(ids)} tokens; in CLM mode this model's encoder reads [CLM] + at most "
                        f"{enc_len - 1} tokens (seq_len {kept.objective.seq_len})")
    window = _window(kept)
    # A CLM piece of training is at most seq_len tokens, prompt included: by default the
    # continuation fills the rest of it; at most the decoder's window.
    limit = max(1, window - len(ids)) if max_tokens is None else max_tokens
    _check_max(max_tokens, window)
    dec = _stream(kept, [kept.objective.clm_id] + ids)
    out, stopped = [], "max_tokens"
    while len(out) < limit:
        tok = sampler.pick(dec.next_logits())
        if tok == kept.objective.eos_id:
            stopped = "eos"
            break
        out.append(tok)
        dec.feed([tok])
    return Generation("clm", kept.decode(out), out, ids, [], stopped)


def _check_max(max_tokens: int | None, window: int) -> None:
    if max_tokens is not None and not 1 <= max_tokens <= window:
        raise UserError(f"--max-tokens {max_tokens}: must be 1 to {window} (the decoder's window, the run's seq_len)")


def split_gaps(prompt: str, gap: str = GAP) -> list[str]:
    """The prompt's text between gap markers (one more part than gaps), each part's trailing
    whitespace before a marker dropped: it belongs to the missing words."""
    parts = prompt.split(gap)
    return [p.rstrip() for p in parts[:-1]] + [parts[-1]]


def generate_denoise(kept, prompt: str, max_tokens: int | None, sampler: Sampler, gap: str = GAP) -> Generation:
    if not gap:
        raise UserError("--gap: the gap marker must not be empty")
    parts = split_gaps(prompt, gap)
    if len(parts) < 2:
        raise UserError(f"--prompt: no gap marked; in denoise mode write {gap} where text is missing "
                        f"(e.g. 'The quick brown {gap} over the lazy dog')")
    pieces = kept.encode(parts)
    kept_ids = [t for p in pieces for t in p]
    n_gaps, window = len(parts) - 1, _window(kept)
    if len(kept_ids) + n_gaps > window:
        raise UserError(f"--prompt: {len(kept_ids)} tokens and {n_gaps} gap(s) do not fit the decoder's window "
                        f"of {window} tokens (the run's seq_len; each gap takes at least one)")
    _check_max(max_tokens, window)
    if max_tokens is not None and max_tokens < n_gaps:
        raise UserError(f"--max-tokens {max_tokens}: fewer than the prompt's {n_gaps} gaps (each takes at least one token)")
    budget = window - len(kept_ids) if max_tokens is None else min(max_tokens, window - len(kept_ids))
    dec = _stream(kept, kept_ids)
    out, fills, stopped = list(pieces[0]), [], "closed"
    dec.feed(pieces[0])
    for g in range(n_gaps):
        after = pieces[g + 1]
        close = after[0] if after else None   # the token that ends the gap; none at the end
        # Room for this gap: the budget left, less one token for each gap still to come.
        room = budget - sum(len(f) for f in fills) - (n_gaps - g - 1)
        fill = []
        while len(fill) < room:
            logits = dec.next_logits()
            if not fill and close is not None:
                logits[close] = float("-inf")   # a dropped span is at least one token
            tok = sampler.pick(logits)
            if tok == close:
                break
            if close is None and tok == kept.objective.eos_id:
                stopped = "eos"
                break
            fill.append(tok)
            dec.feed([tok])
        else:
            stopped = "max_tokens"
        fills.append(fill)
        out += fill + list(after)
        dec.feed(after)
    return Generation("denoise", kept.decode(out), out, kept_ids, [kept.decode(f) for f in fills], stopped)


def generate(kept, prompt: str, mode: str = "clm", max_tokens: int | None = None, temperature: float = 0.0,
             top_k: int = 0, seed: int = 0, gap: str = GAP) -> Generation:
    """Continue `prompt` (mode "clm") or fill its gaps (mode "denoise") with a kept model."""
    if mode not in MODES:
        raise UserError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    sampler = Sampler(temperature, top_k, seed)
    if mode == "clm":
        return generate_clm(kept, prompt, max_tokens, sampler)
    return generate_denoise(kept, prompt, max_tokens, sampler, gap)
