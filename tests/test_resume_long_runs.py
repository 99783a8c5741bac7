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
