"""`vision-interp serve` from the command line: it starts on 127.0.0.1, serves the committed graph pages,
answers an intervention with the real network's change, and refuses bad arguments in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GRAPHS = REPO / "galleries" / "features" / "mnist_cnn_tc" / "graphs"

pytest.importorskip("tornado")


def test_serve_starts_and_serves_the_committed_pages() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "vision_interp", "serve", str(GRAPHS), "--model", "mnist_cnn", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        host, port = line.split("http://", 1)[1].split("/", 1)[0].split(":")
        assert host == "127.0.0.1"  # loopback only
        page = next(p for p in sorted(GRAPHS.iterdir()) if (p / "index.html").is_file())
        with urllib.request.urlopen(f"http://127.0.0.1:{int(port)}/{page.name}/index.html", timeout=30) as r:  # loopback
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_a_missing_folder_in_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "vision_interp", "serve", "/no/such/dir"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "dir" in r.stderr and "Traceback" not in r.stderr
