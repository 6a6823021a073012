"""Models you keep: a completed run keeps its final weights, model.json and tokenizer; the
reloaded model reproduces the run's final validation loss; `scaling score`, `scaling generate`
and `scaling export` use it; the decoder's KV cache gives the full pass's logits; bad input is
one line, exit 2."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scaling
from scaling.base.rundir import MODEL_JSON, TOKENIZER_DIR, WEIGHTS
from scaling.cli import main
from scaling.data.prepare import PrepareConfig, prepare
from scaling.train.model import EncoderDecoder, ModelConfig
from sweep_files import write_sweep_file

ARGS = ["--params", "60K", "--tokens", "40K", "--seq-len", "32", "--batch-size", "8", "--val-points", "3",
        "--no-progress"]


def _docs() -> list[str]:
    import argparse, collections, functools, itertools, os, pathlib, re, textwrap  # noqa: E401

    docs = []
    for mod in (json, collections, argparse, pathlib, textwrap, functools, itertools, re, os, inspect):
        for obj in vars(mod).values():
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and len(doc) > 200:
                docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def bpe_shards(tmp_path_factory) -> Path:
    """Shards with a trained BPE tokenizer (a tokenizer.json to copy), built in a second."""
    out = tmp_path_factory.mktemp("keep-data") / "bpe-512"
    return prepare(_docs(), out, PrepareConfig(tokenizer="bpe", vocab_size=512, val_fraction=0.1),
                   source={"paths": "stdlib docstrings"}, progress=False)


@pytest.fixture(scope="module")
def run_dir(bpe_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keep-runs") / "60K-40K"
    assert main(["train", *ARGS, "--data", str(bpe_shards), "--out", str(out)]) == 0
    return out


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_completed_run_keeps_weights_config_and_tokenizer(run_dir, bpe_shards):
    assert {WEIGHTS, MODEL_JSON, TOKENIZER_DIR} <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    assert not [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    info = json.loads((run_dir / MODEL_JSON).read_text())
    meta = json.loads((bpe_shards / "meta.json").read_text())
    assert info["special_ids"] == {k: meta[k] for k in ("pad_id", "eos_id", "clm_id", "unk_id")}
    assert info["objective"]["seq_len"] == 32 and info["vocab_size"] == 512
    assert sorted(p.name for p in (run_dir / TOKENIZER_DIR).iterdir()) == ["meta.json", "tokenizer.json"]
    assert (run_dir / TOKENIZER_DIR / "tokenizer.json").read_bytes() == (bpe_shards / "tokenizer.json").read_bytes()
    rec = json.loads((run_dir / "run.json").read_text())
    assert (run_dir / WEIGHTS).stat().st_size == pytest.approx(4 * rec["n_params"], rel=0.02)


def test_reloaded_model_reproduces_the_final_validation_loss(run_dir):
    kept = scaling.load_run(run_dir)
    assert not kept.model.training and kept.device.type == "cpu"
    assert kept.config == ModelConfig(**json.loads((run_dir / "run.json").read_text())["model"])
    val = kept.validate()
    rec = json.loads((run_dir / "run.json").read_text())["val"]
    assert val["val_loss"] == pytest.approx(rec["mixed"]["loss"], rel=1e-6)
    assert val["val_loss_denoise"] == pytest.approx(rec["denoise"]["loss"], rel=1e-6)
    assert val["val_loss_clm"] == pytest.approx(rec["clm"]["loss"], rel=1e-6)
    text = "Return a new path, relative to the other one."
    assert kept.decode(kept.encode([text])[0]) == text


@pytest.mark.parametrize("tied", [True, False])
def test_kv_cache_gives_the_full_passs_logits(tied):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=300, d_model=32, n_heads=2, n_enc_layers=2, n_dec_layers=2, max_len=24,
                      tied_embeddings=tied)
    model = EncoderDecoder(cfg).eval()
    enc = torch.randint(4, 300, (2, 20))
    enc[1, 15:] = 0   # padding, masked out of cross-attention
    dec = torch.randint(4, 300, (2, 24))
    with torch.no_grad():
        memory, mask = model.encode(enc)
        full = model.decode(dec, memory, mask)
        cache = model.new_cache()
        steps = [model.decode(dec[:, t:t + 1], memory, mask, cache) for t in range(24)]
        pieces = model.new_cache()
        chunks = [model.decode(dec[:, a:b], memory, mask, pieces) for a, b in ((0, 5), (5, 6), (6, 24))]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 24
    with pytest.raises(ValueError, match="exceeds max_len"):
        model.decode(dec[:, :1], memory, mask, cache)


def test_score_per_document_and_objective(run_dir, tmp_path, capsys):
    docs = _docs()[:3] + ["A short one."]
    f = tmp_path / "docs.jsonl"
    f.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    assert main(["score", str(run_dir), str(f), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["doc"] for r in rows] == ["0", "1", "2", "3", "all"]
    kept = scaling.load_run(run_dir)
    for r, d in zip(rows, docs):
        assert r["tokens"] == len(kept.encode([d])[0]) + 1 and r["bytes"] == len(d.encode())
        assert r["scored_denoise"] == r["tokens"]           # every token scored once
        assert 0 < r["scored_clm"] < r["tokens"]            # the continuations only
        for task in ("denoise", "clm"):
            assert 1 < r[f"loss_{task}"] < 8
            assert r[f"bpb_{task}"] == pytest.approx(r[f"loss_{task}"] / 0.6931471805599453 / (r["bytes"] / r["tokens"]))
    total = rows[-1]
    assert total["tokens"] == sum(r["tokens"] for r in rows[:-1])
    weighted = sum(r["loss_denoise"] * r["scored_denoise"] for r in rows[:-1]) / total["scored_denoise"]
    assert total["loss_denoise"] == pytest.approx(weighted)
    # A fixed seed: the same scores again; the table shows them too.
    assert main(["score", str(run_dir), str(f), "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
    assert main(["score", str(run_dir), str(f)]) == 0
    table = capsys.readouterr().out
    assert "bpb denoise" in table and table.splitlines()[-1].startswith("all")


def test_score_refuses_bad_files(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n\x89PNG\x00\x01 not json\n')
    assert main(["score", str(run_dir), str(bad)]) == 2
    assert f"{bad}:2: not valid JSON" in _error(capsys)
    short = tmp_path / "short.jsonl"
    short.write_text('{"text": "hi"}\n')
    assert main(["score", str(run_dir), str(short)]) == 2
    assert "fewer than one window of 32" in _error(capsys)
    assert main(["score", str(run_dir), str(tmp_path / "none.jsonl")]) == 2
    assert "no such file" in _error(capsys)


def test_generate_clm_greedy_and_sampled(run_dir, capsys):
    args = ["generate", str(run_dir), "--prompt", "Return the", "--json"]
    assert main([*args, "--max-tokens", "8"]) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert greedy["mode"] == "clm" and 1 <= len(greedy["ids"]) <= 8
    sampled = []
    for _ in range(2):
        assert main([*args, "--temperature", "1.0", "--top-k", "20", "--seed", "3", "--max-tokens", "8"]) == 0
        sampled.append(json.loads(capsys.readouterr().out))
    assert sampled[0] == sampled[1]   # a seed repeats
    # The cached decoding is the model's own greedy choice at every step (full passes).
    kept = scaling.load_run(run_dir)
    enc = torch.tensor([[kept.objective.clm_id] + kept.encode(["Return the"])[0]])
    dec = [kept.objective.pad_id]
    with torch.no_grad():
        for _ in greedy["ids"]:
            dec.append(int(kept.model(enc, torch.tensor([dec]))[0, -1].argmax()))
    assert dec[1:] == greedy["ids"]


def test_generate_denoise_fills_marked_gaps(run_dir, capsys):
    prompt = "Return the [...] of the path [...]"
    assert main(["generate", str(run_dir), "--prompt", prompt, "--mode", "denoise", "--json"]) == 0
    g = json.loads(capsys.readouterr().out)
    kept = scaling.load_run(run_dir)
    assert len(g["fills"]) == 2 and g["fills"][0]
    assert g["text"].startswith("Return the") and " of the path" in g["text"]
    assert len(g["ids"]) <= kept.config.max_len
    assert g["text"] == "Return the" + g["fills"][0] + " of the path" + g["fills"][1]


def test_generate_refuses_bad_prompts(run_dir, capsys):
    assert main(["generate", str(run_dir), "--prompt", "word " * 100]) == 2
    assert "--prompt: " in (line := _error(capsys)) and "at most 26 tokens" in line
    assert main(["generate", str(run_dir), "--prompt", "no gap here", "--mode", "denoise"]) == 2
    assert "no gap marked" in _error(capsys)
    assert main(["generate", str(run_dir), "--prompt", "[...] x" * 40, "--mode", "denoise"]) == 2
    assert "do not fit the decoder's window of 32" in _error(capsys)
    assert main(["generate", str(run_dir), "--prompt", "x", "--max-tokens", "33"]) == 2
    assert "--max-tokens 33" in _error(capsys)
    if not torch.cuda.is_available():
        assert main(["generate", str(run_dir), "--prompt", "x", "--device", "cuda"]) == 2
        assert "no CUDA device" in _error(capsys)


def test_no_weights_is_one_line(run_dir, bpe_shards, tmp_path, capsys):
    unkept = tmp_path / "unkept"
    assert main(["train", *ARGS, "--tokens", "2K", "--data", str(bpe_shards), "--out", str(unkept),
                 "--no-keep-weights"]) == 0
    assert not (unkept / WEIGHTS).exists() and not (unkept / TOKENIZER_DIR).exists()
    assert main(["generate", str(unkept), "--prompt", "x"]) == 2
    assert "keep_weights = false" in _error(capsys)
    # A run that has not finished keeps nothing yet: its record says why.
    running = tmp_path / "running"
    running.mkdir()
    rec = json.loads((run_dir / "run.json").read_text())
    (running / "run.json").write_text(json.dumps({**rec, "status": "running"}))
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": _docs()[0]}) + "\n")
    assert main(["score", str(running), str(docs)]) == 2
    assert "the run is running" in _error(capsys)
    with pytest.raises(scaling.base.errors.UserError, match="no such run directory"):
        scaling.load_run(tmp_path / "nowhere")


def test_sweep_plan_shows_the_disk_weights_take(bpe_shards, tmp_path, capsys):
    body = '[grid]\nsizes = ["60K", "100K"]\ntokens = ["40K"]\n'
    path = write_sweep_file(tmp_path / "s.toml", bpe_shards, name="s", kind="grid", body=body)
    path.write_text(path.read_text().replace("vocab_size = 260", "vocab_size = 512"))
    assert main(["sweep", "plan", str(path), "--json"]) == 0
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["weight_bytes"] for r in runs] == [4 * r["n_params"] for r in runs]
    assert main(["sweep", "plan", str(path)]) == 0
    total = sum(4 * r["n_params"] for r in runs)
    assert total < 1e6 and f"weights: {total / 1e3:.3g} kB on disk" in capsys.readouterr().out
    path.write_text(path.read_text().replace("[train]\n", "[train]\nkeep_weights = false\n"))
    assert main(["sweep", "plan", str(path)]) == 0
    assert "weights: none kept (keep_weights = false)" in capsys.readouterr().out


def test_export_to_transformers_gives_equal_logits(run_dir, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--to", "hf", "--out", str(out)]) == 0
    assert "BlenderbotForConditionalGeneration" in capsys.readouterr().out
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "BlenderbotForConditionalGeneration"
    assert (out / "tokenizer.json").exists()
    kept = scaling.load_run(run_dir)
    ids = kept.encode(["Return a new path, relative to the other one."])[0]
    enc = torch.tensor([[kept.objective.clm_id] + ids[:20]])
    dec = torch.tensor([[kept.objective.pad_id] + ids[20:]])
    with torch.no_grad():
        ours = kept.model(enc, dec)
        theirs = hf(input_ids=enc, decoder_input_ids=dec).logits
    assert ours.abs().max() > 1
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "not empty" in _error(capsys)
    shutil.rmtree(out)


@pytest.mark.parametrize("tied,bias", [(False, True), (True, False)])
def test_export_maps_untied_heads_and_bias_free_models(tied, bias, run_dir):
    """The mapping on shapes a run of the lab may also have: an untied LM head, no biases."""
    pytest.importorskip("transformers")
    from scaling.use.export import check, to_hf
    from scaling.use.load import KeptModel

    kept = scaling.load_run(run_dir)
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=kept.config.vocab_size, d_model=32, n_heads=2, n_enc_layers=2, n_dec_layers=1,
                      max_len=32, tied_embeddings=tied, bias=bias)
    model = EncoderDecoder(cfg, pad_id=kept.model.pad_id).eval()
    other = KeptModel(path=run_dir, model=model, tokenizer=kept.tokenizer, config=cfg, objective=kept.objective,
                      special_ids=kept.special_ids, info=kept.info)
    hf = to_hf(other)
    assert check(other, hf) <= 1e-4
    with torch.no_grad():   # the check sees a wrong mapping: k and v of one layer swapped
        attn = hf.model.decoder.layers[0].encoder_attn
        attn.k_proj.weight[:], attn.v_proj.weight[:] = attn.v_proj.weight.clone(), attn.k_proj.weight.clone()
    with pytest.raises(scaling.base.errors.UserError, match="export check failed"):
        check(other, hf)


_VALUES = st.one_of(st.integers(-3, 40).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                    st.sampled_from(["", "x", "1e3", "-0", "cuda", "cpu", "nan"]))


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(words=st.lists(st.one_of(st.text(max_size=12), st.just("[...]")), max_size=12),
       mode=st.sampled_from(["clm", "denoise", "other"]),
       flags=st.lists(st.tuples(st.sampled_from(["--max-tokens", "--temperature", "--top-k", "--seed", "--gap",
                                                 "--device"]), _VALUES), max_size=3))
def test_fuzzed_generate_arguments_end_in_output_or_one_line(run_dir, capsys, words, mode, flags):
    argv = ["generate", str(run_dir), "--prompt", " ".join(words), "--mode", mode,
            *[x for pair in flags for x in pair]]
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert "Traceback" not in err, (argv, err)
    assert (rc == 0 and not errors) or (rc == 2 and len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0]), \
        (argv, rc, err[-2000:])
