"""The attribution commands, in-process (fast) and once as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from vision_interp.cli import main


def test_attribute_commands(tmp_path, data_dir, capsys):
    out = tmp_path / "ig.png"
    assert main(["attribute", "--index", "0..3", "--n-steps", "8", "--out", str(out), "--no-progress",
                 "--data-dir", str(data_dir)]) == 0
    text = capsys.readouterr().out
    assert "test[3]: label 0 predicted 0" in text
    with Image.open(out) as im:  # 4 inputs x (input | heat | overlay), 28 px enlarged x4
        assert im.size[0] > 12 * 28 * 4 and im.size[1] > 28 * 4
    assert main(["attribute", "--index", "1", "--target", "conv2:5", "--method", "gradcam", "--layer", "pool1",
                 "--out", str(tmp_path / "cam.png"), "--no-progress", "--data-dir", str(data_dir)]) == 0
    assert main(["attribute", "--index", "0..29", "--class-means", "--method", "saliency", "--out",
                 str(tmp_path / "means.png"), "--no-progress", "--data-dir", str(data_dir)]) == 0
    assert (tmp_path / "means.png").is_file()
    assert main(["attribute-layer", "--index", "3", "--layer", "pool2", "--top", "3", "--n-steps", "8",
                 "--out", str(tmp_path / "layer.png"), "--data-dir", str(data_dir)]) == 0
    text = capsys.readouterr().out
    assert text.count("pool2:") == 3 and "% of |total|" in text
    assert main(["attribution-check", "--index", "0..3", "--n-steps", "64", "--data-dir", str(data_dir)]) == 0
    text = capsys.readouterr().out
    assert "max relative error" in text and "up to conv1" in text


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "12"], "valid classes are 0..9"),
        (["--target", "conv3:1"], "Closest: conv2"),
        (["--method", "gradcm"], "Did you mean gradcam"),
        (["--option", "foo=1"], "unknown option(s) foo"),
        (["--index", "10000"], "indices 0..9999"),
        (["--layer", "conv2"], "--layer applies to gradcam"),
    ],
)
def test_attribute_errors(tmp_path, data_dir, capsys, args, message):
    rc = main(["attribute", "--data-dir", str(data_dir), "--no-progress", "--out", str(tmp_path / "x.png")] + args)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_attribute_subprocess_with_image_file(tmp_path, data_dir):
    from vision_interp import images
    from vision_interp.data import load_mnist

    src = tmp_path / "digit.png"
    images.save_png(load_mnist("test", data_dir, limit=1).images[0], src)
    env = dict(os.environ, VISION_INTERP_DATA=str(data_dir))
    proc = subprocess.run([sys.executable, "-m", "vision_interp", "attribute", "--image", str(src), "--method",
                           "saliency", "--out", str(tmp_path / "s.png"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "predicted 7" in proc.stdout and (tmp_path / "s.png").is_file()
