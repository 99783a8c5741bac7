"""Long runs resume (issue 13): train-mnist, train-induction and mnist-exercise keep their work across a failure.

Each test interrupts a tiny run by raising from a callback (or a patched stage), reruns with the same
settings, and compares with an uninterrupted run: results must be bit-identical and finished work reused.
"""

from __future__ import annotations

import pytest
import torch

from vision_interp.io import load_state_dict


class Interrupted(RuntimeError):
    """Stands for a crash or Ctrl-C in the middle of a long run."""


def _stop_after(epoch_to_fail: int, seen: list[int]):
    def on_epoch(epoch: int, model) -> None:
        seen.append(epoch)
        if epoch == epoch_to_fail:
            raise Interrupted(f"stop after epoch {epoch}")
    return on_epoch


def _assert_same_weights(a, b) -> None:
    sa, sb = load_state_dict(a), load_state_dict(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# =============================================================================== train-mnist

def test_train_mnist_resumes_bit_identically(data_dir, tmp_path, one_thread, capsys):
    from vision_interp.zoo.mnist_cnn import TrainConfig, resume_path, train_and_save

    cfg = TrainConfig(seed=0, epochs=2, limit=512, threads=1)
    full = train_and_save(data_dir, tmp_path / "full", cfg, progress=False)
    assert not resume_path(tmp_path / "full").parent.exists()  # removed once the final checkpoint is written

    out, seen = tmp_path / "run", []
    with pytest.raises(Interrupted):
        train_and_save(data_dir, out, cfg, progress=False, on_epoch=_stop_after(0, seen))
    assert seen == [0] and resume_path(out).is_file() and not (out / "mnist_cnn.safetensors").exists()

    seen.clear()
    card = train_and_save(data_dir, out, cfg, progress=True, on_epoch=_stop_after(-1, seen))
    assert seen == [1], "the rerun must start after the finished epoch, not from scratch"
    assert "resuming after epoch 1 of 2" in capsys.readouterr().err
    _assert_same_weights(out / "mnist_cnn.safetensors", tmp_path / "full" / "mnist_cnn.safetensors")
    assert card["test_accuracy"] == full["test_accuracy"]
    assert not resume_path(out).parent.exists()


def test_train_mnist_other_config_starts_fresh(data_dir, tmp_path, one_thread, capsys):
    from vision_interp.zoo.mnist_cnn import TrainConfig, train_and_save

    out, seen = tmp_path / "run", []
    with pytest.raises(Interrupted):
        train_and_save(data_dir, out, TrainConfig(seed=0, epochs=2, limit=256, threads=1), progress=False, on_epoch=_stop_after(0, seen))
    other = TrainConfig(seed=1, epochs=2, limit=256, threads=1)
    seen.clear()
    train_and_save(data_dir, out, other, progress=False, on_epoch=_stop_after(-1, seen))
    assert seen == [0, 1], "a state from another configuration must not be resumed"
    assert "different configuration; starting from scratch" in capsys.readouterr().err
    train_and_save(data_dir, tmp_path / "fresh", other, progress=False)
    _assert_same_weights(out / "mnist_cnn.safetensors", tmp_path / "fresh" / "mnist_cnn.safetensors")


def test_train_mnist_corrupt_resume_state_is_not_trusted(data_dir, tmp_path, one_thread, capsys):
    from vision_interp.zoo.mnist_cnn import TrainConfig, resume_path, train_and_save

    out = tmp_path / "run"
    resume_path(out).parent.mkdir(parents=True)
    resume_path(out).write_bytes(b"PK\x03\x04 truncated")
    cfg = TrainConfig(seed=0, epochs=1, limit=256, threads=1)
    train_and_save(data_dir, out, cfg, progress=False)
    assert "ignoring unreadable resume state" in capsys.readouterr().err
    train_and_save(data_dir, tmp_path / "fresh", cfg, progress=False)
    _assert_same_weights(out / "mnist_cnn.safetensors", tmp_path / "fresh" / "mnist_cnn.safetensors")


# =============================================================================== train-induction

def _stop_at_step(step: int, seen: list[str]):
    def log(msg: str) -> None:
        seen.append(msg)
        if msg.startswith(f"step {step} "):
            raise Interrupted(msg)
    return log


def test_train_induction_resumes_bit_identically(tmp_path, capsys):
    import json

    from vision_interp.transformer.toy import ToyConfig, resume_path, train_and_save

    cfg = ToyConfig(seed=0, steps=30, batch_size=4, n_positions=32, max_segment=12, short_length=12, eval_every=10,
                    warmup=5, stop_below=0.0)
    train_and_save(tmp_path / "full", cfg, progress=False, checkpoint_every=10)
    assert not resume_path(tmp_path / "full").parent.exists()

    out, seen = tmp_path / "run", []
    with pytest.raises(Interrupted):
        train_and_save(out, cfg, progress=False, log=_stop_at_step(20, seen), checkpoint_every=10)
    assert resume_path(out).is_file() and not (out / "model.safetensors").exists()

    seen.clear()
    card = train_and_save(out, cfg, progress=False, log=seen.append, checkpoint_every=10)
    assert [m.split()[1] for m in seen] == ["30"], "the rerun must continue after step 20, not from scratch"
    assert "resuming after step 20 of 30" in capsys.readouterr().err
    _assert_same_weights(out / "model.safetensors", tmp_path / "full" / "model.safetensors")
    full = json.loads((tmp_path / "full" / "card.json").read_text())
    strip = lambda probe: [{k: v for k, v in p.items() if k != "seconds"} for p in probe]  # noqa: E731
    assert strip(card["probe_during_training"]) == strip(full["probe_during_training"])
    assert (card["first_train_loss"], card["final_train_loss_mean_last_50"], card["eval"]) == \
           (full["first_train_loss"], full["final_train_loss_mean_last_50"], full["eval"])
    assert not resume_path(out).parent.exists()

    # another configuration in the same folder is not resumed from a stale state
    with pytest.raises(Interrupted):
        train_and_save(out, cfg, progress=False, log=_stop_at_step(20, []), checkpoint_every=10)
    seen.clear()
    from dataclasses import replace

    train_and_save(out, replace(cfg, seed=1), progress=False, log=seen.append, checkpoint_every=10)
    assert [m.split()[1] for m in seen] == ["10", "20", "30"]
    assert "different configuration; starting from scratch" in capsys.readouterr().err


# =============================================================================== mnist-exercise

def _exercise(out, **kw):
    from vision_interp.exercises.mnist import ExerciseConfig, run_mnist_exercise

    # the smallest real configuration: one traced digit, 200 evaluation images, one thread
    return run_mnist_exercise(ExerciseConfig(out=out, quick=True, progress=False, seed=0, circuit_classes=(0,), eval_images=200, threads=1, **kw))


def _counting(monkeypatch, calls: list[str], fail: str | None = None) -> None:
    """Wrap every mechanism stage to record its calls; ``fail`` raises once its stage has started."""
    from vision_interp.exercises import stages as S

    for key in ("conv1", "featvis", "conv2", "circuits", "completeness", "attribution", "confusions", "deep_dive"):
        fn = getattr(S, f"stage_{key}")

        def wrapped(ex, fn=fn, key=key):
            calls.append(key)
            if key == fail:
                raise Interrupted(f"crash in {key}")
            fn(ex)
        monkeypatch.setattr(S, f"stage_{key}", wrapped)


def _comparable(results_json) -> dict:
    import json

    r = json.loads(results_json.read_text())
    r.pop("timing_seconds")
    r["config"].pop("out")
    return r


def _without_times(report) -> str:
    """report.md without its stage-time line (times differ between runs)."""
    import re

    return re.sub(r"stage times \(s\): .*", "stage times", report.read_text())


def test_mnist_exercise_reuses_finished_stages(data_dir, tmp_path, monkeypatch, capsys):
    import json
    import shutil

    import vision_interp.featvis as FV
    from vision_interp.exercises.resume import STAGE_DIR, StageCache

    # fewer optimisation steps for the 34 feature visualizations: the orchestration is under test, not featvis
    monkeypatch.setattr(FV, "visualize", __import__("functools").partial(FV.visualize, steps=8))
    # an uninterrupted reference run, keeping its stage records so that a copy of it stands for a run that got far
    ref = tmp_path / "ref"
    with monkeypatch.context() as m:
        m.setattr(StageCache, "clear", lambda self: None)
        _exercise(ref, data_dir=data_dir)
    assert sorted(p.stem for p in (ref / STAGE_DIR).iterdir()) == sorted(
        ["conv1", "featvis", "conv2", "circuits", "completeness", "attribution", "confusions", "deep_dive"])

    out = tmp_path / "run"
    shutil.copytree(ref, out)
    for name in ("results.json", "report.md", "report.html", f"{STAGE_DIR}/confusions.json", f"{STAGE_DIR}/deep_dive.json"):
        (out / name).unlink()

    calls: list[str] = []
    with monkeypatch.context() as m:
        _counting(m, calls, fail="deep_dive")
        with pytest.raises(Interrupted):
            _exercise(out, data_dir=data_dir)
    assert calls == ["confusions", "deep_dive"], "finished stages must be reused, not recomputed"
    assert (out / STAGE_DIR / "confusions.json").is_file() and not (out / STAGE_DIR / "deep_dive.json").exists()
    assert not (out / "results.json").exists()
    capsys.readouterr()

    calls.clear()
    with monkeypatch.context() as m:
        _counting(m, calls)
        _exercise(out, data_dir=data_dir)
    assert calls == ["deep_dive"]
    assert "reused 7 stage(s)" in capsys.readouterr().err
    assert _comparable(out / "results.json") == _comparable(ref / "results.json")
    assert _without_times(out / "report.md") == _without_times(ref / "report.md")
    times = json.loads((out / "results.json").read_text())["timing_seconds"]
    stage_sum = sum(v for k, v in times.items() if k not in ("total", "report"))
    assert times["total"] >= stage_sum - 0.5, "the total must include the time reused stages took when computed"
    assert not (out / STAGE_DIR).exists(), "stage records are removed once results.json is written"

    # records from other settings are not reused
    (ref / "results.json").unlink()
    calls.clear()
    with monkeypatch.context() as m:
        _counting(m, calls, fail="conv1")
        with pytest.raises(Interrupted):
            _exercise(ref, data_dir=data_dir, k_channels=2)
    assert calls == ["conv1"]


def test_stage_records_round_trip_exactly():
    import json

    import numpy as np

    from vision_interp.exercises.resume import decode, encode

    obj = {"t": torch.randn(1, 3, 3), "a": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "s": np.float64(1 / 3),
           "k": {(1, "x"): [1, 2.5, None], 3: "three"}, "tup": (1, (2, 3)), "nan": float("nan"), "b": True}
    back = decode(json.loads(json.dumps(encode(obj))))
    assert torch.equal(back["t"], obj["t"]) and back["t"].dtype == torch.float32
    assert back["a"].dtype == np.float32 and np.array_equal(back["a"], obj["a"])
    assert type(back["s"]) is np.float64 and back["s"] == obj["s"]
    assert back["k"] == obj["k"] and back["tup"] == obj["tup"] and back["b"] is True and back["nan"] != back["nan"]
    with pytest.raises(TypeError):
        encode(object())


def test_retrained_model_is_reused_only_when_it_matches(data_dir, tmp_path, one_thread):
    from vision_interp.exercises.mnist import retrained_card
    from vision_interp.zoo.mnist_cnn import TrainConfig, train_and_save

    cfg = TrainConfig(seed=0, epochs=1, limit=256, threads=1)
    assert retrained_card(tmp_path / "model", cfg, data_dir) is None
    card = train_and_save(data_dir, tmp_path / "model", cfg, progress=False)
    assert retrained_card(tmp_path / "model", cfg, data_dir) == card
    assert retrained_card(tmp_path / "model", TrainConfig(seed=1, epochs=1, limit=256, threads=1), data_dir) is None
    weights = tmp_path / "model" / "mnist_cnn.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert retrained_card(tmp_path / "model", cfg, data_dir) is None, "weights that no longer match the card are retrained"
