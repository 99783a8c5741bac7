"""vision_interp.transformer: loading, score definitions against brute force, the committed toy model, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from vision_interp.transformer import (NotGPT2Error, TOY_MODEL_DIR, ablated_loss, ablation_scan, analyze_induction,
                                       attention_patterns, composition_scores, copying_scores, head_weights, load_gpt2,
                                       load_gpt2_tokenizer, pattern_scores, repeated_tokens, save_gpt2)

# Thresholds the committed toy model supports (its measured values are in models/induction_2l/card.json and
# in the report of `vision-interp induction`); they are far from what a random model reaches (~0.02).
INDUCTION_MIN = 0.5
PREV_TOKEN_MIN = 0.5


def tiny_gpt2(n_layer: int = 2, n_head: int = 4, n_embd: int = 32, vocab: int = 100, n_positions: int = 64, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    m = GPT2LMHeadModel(cfg)
    m.set_attn_implementation("eager")
    return m.eval()


@pytest.fixture(scope="module")
def toy():
    return load_gpt2("induction_2l")


@pytest.fixture(scope="module")
def toy_report(toy):
    return analyze_induction(toy, model_name="induction_2l", seq_len=50, batch=10, seed=0, progress=False)


# ---------------------------------------------------------------- loading


def test_toy_checkpoint_is_small_safetensors_with_card():
    weights = TOY_MODEL_DIR / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 2_000_000
    card = json.loads((TOY_MODEL_DIR / "card.json").read_text())
    ev = card["eval"]
    # in-context copying: the second copy is far below the first, which is no better than uniform
    assert ev["loss_second_copy"] < 1.0 and ev["loss_first_copy"] > 0.9 * ev["uniform_loss_log_vocab"]
    assert card["command"].startswith("vision-interp train-induction") and card["steps_done"] <= card["config"]["steps"]
    assert (TOY_MODEL_DIR / "README.md").read_text().startswith("# Model card")


def test_local_dir_with_safetensors_roundtrip(tmp_path):
    m = tiny_gpt2()
    save_gpt2(m, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    m2 = load_gpt2(tmp_path / "m")
    assert m2.config._attn_implementation == "eager" and not m2.training
    x = torch.randint(0, 99, (2, 10))
    torch.testing.assert_close(m(x).logits, m2(x).logits)


def test_pickle_only_checkpoint_loaded_weights_only(tmp_path):
    m = tiny_gpt2()
    d = tmp_path / "bin"
    d.mkdir()
    m.config.save_pretrained(d)
    torch.save({k: v for k, v in m.state_dict().items()}, d / "pytorch_model.bin")
    m2 = load_gpt2(d)
    x = torch.randint(0, 99, (1, 8))
    torch.testing.assert_close(m(x).logits, m2(x).logits)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused(tmp_path):
    from vision_interp.io import CorruptFileError

    m = tiny_gpt2()
    d = tmp_path / "evil"
    d.mkdir()
    m.config.save_pretrained(d)
    torch.save({"x": _Evil()}, d / "pytorch_model.bin")
    with pytest.raises(CorruptFileError, match="weights_only"):
        load_gpt2(d)


def test_non_gpt2_config_and_unknown_path_errors(tmp_path):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(NotGPT2Error, match="model_type 'bert'"):
        load_gpt2(d)
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_gpt2(tmp_path / "does_not_exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_gpt2(tmp_path / "empty")


def test_tokenizer_from_data_dir(data_dir):
    tok = load_gpt2_tokenizer(data_dir / "gpt2_tokenizer")
    assert tok.encode("Hello world") == [15496, 995]
    assert load_gpt2_tokenizer(data_dir=data_dir).encode("Hello world") == [15496, 995]
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_gpt2_tokenizer(data_dir)  # the data dir itself has no vocab.json


# ---------------------------------------------------------------- probe and bad input


def test_bad_probe_sizes_fail_before_forward(monkeypatch):
    m = tiny_gpt2(n_positions=64)

    def boom(*a, **k):
        raise AssertionError("forward pass ran before validation")

    monkeypatch.setattr(m, "forward", boom)
    with pytest.raises(ValueError, match="context window is 64; use seq_len <= 31"):
        analyze_induction(m, seq_len=32, progress=False)
    for kw in ({"seq_len": 0}, {"batch": 0}, {"batch": -3}, {"seq_len": 2.5}):
        with pytest.raises(ValueError, match="positive integer"):
            analyze_induction(m, **kw, progress=False)
    with pytest.raises(ValueError, match="unknown ablation mode"):
        analyze_induction(m, seq_len=10, ablation=["resample"], progress=False)


def test_repeated_tokens_layout_and_seed():
    m = tiny_gpt2(vocab=100)
    t = repeated_tokens(m, seq_len=20, batch=5, seed=3)
    assert t.shape == (5, 41)
    assert (t[:, 0] == 99).all() and (t[:, 1:] != 99).all() and t.max() < 100
    assert torch.equal(t[:, 1:21], t[:, 21:])
    assert torch.equal(t, repeated_tokens(m, seq_len=20, batch=5, seed=3))
    assert not torch.equal(t, repeated_tokens(m, seq_len=20, batch=5, seed=4))


# ---------------------------------------------------------------- score definitions against brute force


def test_pattern_scores_match_loops():
    m = tiny_gpt2()
    s = 7
    tok = repeated_tokens(m, seq_len=s, batch=3, seed=0)
    P = attention_patterns(m, tok)  # (L, B, H, T, T)
    assert torch.allclose(P.sum(-1), torch.ones(()))
    assert float(P.triu(1).abs().max()) == 0.0  # causal
    sc = pattern_scores(P, s)
    L, B, H, T, _ = P.shape
    for l in range(L):
        for h in range(H):
            ind = np.mean([float(P[l, b, h, q, q - s + 1]) for b in range(B) for q in range(s + 1, T)])
            prev = np.mean([float(P[l, b, h, q, q - 1]) for b in range(B) for q in range(1, T)])
            dup = np.mean([float(P[l, b, h, q, q - s]) for b in range(B) for q in range(s + 1, T)])
            assert sc["induction"][l, h] == pytest.approx(ind, abs=1e-6)
            assert sc["previous_token"][l, h] == pytest.approx(prev, abs=1e-6)
            assert sc["duplicate_token"][l, h] == pytest.approx(dup, abs=1e-6)


def test_attention_needs_eager():
    m = tiny_gpt2()
    m.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="eager"):
        attention_patterns(m, repeated_tokens(m, 5, 1))


def test_composition_and_copying_match_brute_force():
    m = tiny_gpt2(n_layer=3)
    w = head_weights(m)
    comp = composition_scores(m)
    cp = copying_scores(m)
    fro = torch.linalg.norm
    for (l1, h1, l2, h2) in [(0, 1, 2, 3), (1, 0, 2, 2), (0, 3, 1, 0)]:
        OV1 = w.W_V[l1, h1] @ w.W_O[l1, h1]
        QK2 = w.W_Q[l2, h2] @ w.W_K[l2, h2].T
        OV2 = w.W_V[l2, h2] @ w.W_O[l2, h2]
        assert comp["k_composition"][l1, h1, l2, h2] == pytest.approx(float(fro(OV1 @ QK2.T) / (fro(OV1) * fro(QK2))), rel=1e-4)
        assert comp["q_composition"][l1, h1, l2, h2] == pytest.approx(float(fro(OV1 @ QK2) / (fro(OV1) * fro(QK2))), rel=1e-4)
        assert comp["v_composition"][l1, h1, l2, h2] == pytest.approx(float(fro(OV1 @ OV2) / (fro(OV1) * fro(OV2))), rel=1e-4)
    assert np.isnan(comp["k_composition"][1, 0, 0, 0]) and np.isnan(comp["k_composition"][1, 0, 1, 2])
    # copying: the small d_head x d_head matrix gives the eigenvalues of the full vocab x vocab circuit
    for l, h in [(0, 0), (2, 3)]:
        W_U = w.W_U - w.W_U.mean(1, keepdim=True)  # centred over the vocabulary (softmax-invariant)
        full = (w.W_E @ w.W_V[l, h] @ w.W_O[l, h] @ W_U).double()
        lam = torch.linalg.eigvals(full)
        lam = lam[lam.abs() > 1e-6 * lam.abs().max()]
        assert cp["copying"][l, h] == pytest.approx(float(lam.sum().real / lam.abs().sum()), abs=1e-4)
    # a head whose OV circuit is W_E^T-aligned copies: make W_V W_O ~ (W_U W_E)^+ restricted, check sign flips
    assert cp["copying"].shape == (3, 4) and np.all(np.abs(cp["copying"]) <= 1 + 1e-9)


def test_ablation_scan_matches_single_full_forward():
    m = tiny_gpt2(n_layer=3)
    tok = repeated_tokens(m, seq_len=10, batch=4, seed=1)
    scan = ablation_scan(m, tok, max_rows=8, progress=False)  # several chunks per layer
    assert scan["clean_loss_recomputed"] == pytest.approx(scan["clean_loss"], abs=1e-5)
    for (l, h) in [(0, 2), (1, 0), (2, 3)]:
        for mode in ("mean", "zero"):
            assert scan[mode][l, h] == pytest.approx(ablated_loss(m, tok, [(l, h)], mode) - scan["clean_loss"], abs=1e-5)
    with pytest.raises(IndexError, match="layers 0..2"):
        ablated_loss(m, tok, [(3, 0)])


# ---------------------------------------------------------------- the toy trainer


def test_copy_task_batch_layouts_vary_and_mark_repeats():
    from dataclasses import replace

    from vision_interp.transformer import ToyConfig, copy_task_batch

    cfg = replace(ToyConfig(), batch_size=64)
    x, pred = copy_task_batch(cfg, torch.Generator().manual_seed(0))
    x2, _ = copy_task_batch(cfg, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and x.shape == (64, cfg.n_positions)
    assert (x[:, 0] == cfg.bos_token_id).all() and (x[:, 1:] != cfg.bos_token_id).all()
    starts, lengths = set(), set()
    for b in range(64):
        idx = torch.nonzero(pred[b]).flatten()
        L = int(idx.numel())
        first = int(idx[0])
        # the marked positions are exactly the second copy of the segment right before them
        assert torch.equal(x[b, first:first + L], x[b, first - L:first]) and int(idx[-1]) == first + L - 1
        starts.add(first - L)
        lengths.add(L)
    assert 1 in starts and len(starts) > 5 and len(lengths) > 10  # probe layout and random places / lengths
    xs, ps = copy_task_batch(cfg, torch.Generator().manual_seed(1), length=24)
    assert xs.shape == (64, 24) and ps.any(1).all()


def test_training_is_deterministic_from_seed():
    from dataclasses import replace

    from vision_interp.transformer import ToyConfig, train_induction_model

    cfg = replace(ToyConfig(), steps=6, batch_size=4, eval_every=3, n_positions=64, max_segment=20,
                  stop_below=0.0)
    m1, h1 = train_induction_model(cfg, progress=False)
    m2, h2 = train_induction_model(cfg, progress=False)
    assert h1["losses"] == h2["losses"] and h1["steps_done"] == 6 and len(h1["probe"]) == 2
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    m3, _ = train_induction_model(replace(cfg, seed=1), progress=False)
    assert not torch.equal(m1.transformer.wte.weight, m3.transformer.wte.weight)
    with pytest.raises(ValueError, match="max_segment"):
        ToyConfig(max_segment=80)


# ---------------------------------------------------------------- the committed toy model


def test_toy_model_has_induction_circuit(toy, toy_report):
    r = toy_report
    assert r.losses["second_copy"] < 1.0 < r.losses["first_copy"] - 3.0
    (li, hi, ind), = r.top("induction", 1)
    assert li == 1 and ind >= INDUCTION_MIN
    (lp, hp, prev), = r.top("previous_token", 1)  # over all heads, not only layer 0
    assert lp == 0 and prev >= PREV_TOKEN_MIN
    # K-composition: the previous-token head is the layer-0 head that feeds the induction head's keys most
    kc = r.composition_into(li, hi, "k_composition")[0]
    assert int(np.argmax(kc)) == hp and kc[hp] > 1.5 * np.sort(kc)[-2]
    # ablation: the detected induction heads (and the previous-token head they read) matter far more than any
    # head outside the circuit, alone and together
    induction_heads = [(l, h) for l, h, v in r.top("induction", r.n_layer * r.n_head) if v >= INDUCTION_MIN]
    circuit = set(induction_heads) | {(lp, hp)}
    for mode in ("mean", "zero"):
        eff = r.scores[f"ablation_{mode}"]
        others = max(max(eff[l, h] for l in range(r.n_layer) for h in range(r.n_head) if (l, h) not in circuit), 0.03)
        assert all(eff[l, h] > 3 * others for l, h in induction_heads), (mode, eff)
        assert eff[lp, hp] > 30 * others, (mode, eff)
        joint = ablated_loss(toy, r.tokens, induction_heads, mode) - r.losses["second_copy"]
        assert joint > 2.0 and joint > 30 * others, (mode, joint, eff)


def test_toy_scores_reproducible_and_batch_order_invariant(toy):
    tok = repeated_tokens(toy, seq_len=30, batch=6, seed=5)
    P = attention_patterns(toy, tok)
    a = pattern_scores(P, 30)
    b = pattern_scores(attention_patterns(toy, tok.flip(0)), 30)
    c = pattern_scores(attention_patterns(toy, repeated_tokens(toy, seq_len=30, batch=6, seed=5)), 30)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)
        np.testing.assert_array_equal(a[k], c[k])


def test_report_outputs(toy_report, tmp_path):
    paths = toy_report.save(tmp_path)
    names = {p.name for p in paths}
    assert {"induction.json", "heatmap_induction.png", "heatmap_previous_token.png", "heatmap_ablation_mean.png",
            "attention_top_heads.png"} <= names
    data = json.loads((tmp_path / "induction.json").read_text())
    assert np.allclose(data["scores"]["induction"], toy_report.scores["induction"])
    assert data["composition"]["k_composition"][1][0][0][0] is None  # l1 >= l2 -> null
    assert data["top_heads"]["induction"][0]["head"].startswith("1.")
    from PIL import Image

    assert Image.open(tmp_path / "attention_top_heads.png").size[0] > 300
    assert "rank  head" in toy_report.table()


# ---------------------------------------------------------------- CLI


def test_cli_induction_on_toy(tmp_path, capsys):
    from vision_interp.cli import main

    rc = main(["induction", "--model", "induction_2l", "--seq-len", "30", "--batch", "4", "--ablation", "zero",
               "--out", str(tmp_path), "--no-progress", "--top", "4"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "rank  head" in out and "K-composition into 1." in out
    data = json.loads((tmp_path / "induction.json").read_text())
    assert data["probe"]["seq_len"] == 30 and "ablation_zero" in data["scores"] and "ablation_mean" not in data["scores"]


@pytest.mark.parametrize("argv, message", [
    (["--seq-len", "100"], "context window"),
    (["--batch", "0"], "positive integer"),
    (["--ablation", "resample"], "unknown mode"),
    (["--model", "/nonexistent/gpt2_dir"], "no model directory"),
])
def test_cli_bad_input(argv, message, capsys, tmp_path):
    from vision_interp.cli import main

    assert main(["induction", "--out", str(tmp_path), "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err
