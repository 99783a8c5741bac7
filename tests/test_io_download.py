"""Downloads against a loopback HTTP server, atomic writes, safe loading, InceptionV1 weights path."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from vision_interp import io as vio
from vision_interp.data import mnist as vmnist
from vision_interp.zoo import inceptionv1
from vision_interp.zoo.inceptionv1 import InceptionV1


class _Server:
    """Serves files from a dict path -> bytes on 127.0.0.1; `truncate` sends fewer bytes than announced."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in outer.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _state_dict_bytes(tmp_path: Path) -> bytes:
    torch.manual_seed(1)
    p = tmp_path / "gen.pth"
    torch.save(InceptionV1().state_dict(), p)
    return p.read_bytes()


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.json"
    vio.save_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with vio.atomic_open(target, "w") as f:
            f.write("{half")
            raise RuntimeError("crash mid-write")
    assert vio.load_json(target) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_load_state_dict_refuses_pickled_code_and_truncation(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "x": Evil()}, p)
    with pytest.raises(vio.CorruptFileError, match="weights_only"):
        vio.load_state_dict(p)
    good = tmp_path / "good.safetensors"
    vio.save_state_dict(good, {"w": torch.arange(10.0)})
    assert torch.equal(vio.load_state_dict(good)["w"], torch.arange(10.0))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(vio.CorruptFileError, match="truncated"):
        vio.load_state_dict(cut)


def test_inception_download_good_file_loads_strict_and_records_hash(tmp_path):
    blob = _state_dict_bytes(tmp_path)
    digest = hashlib.sha256(blob).hexdigest()
    cache = tmp_path / "cache"
    with _Server() as srv:
        srv.files["/inception5h.pth"] = blob
        with pytest.warns(UserWarning, match="recorded"):
            m = inceptionv1(pretrained=True, url=srv.url + "/inception5h.pth", cache_dir=cache, progress=False)
        assert (cache / "inception5h.pth.sha256").read_text().strip() == digest
        ref = torch.load(tmp_path / "gen.pth", weights_only=True)
        assert torch.equal(m.state_dict()["mixed4a_3x3_pre_relu_conv.weight"], ref["mixed4a_3x3_pre_relu_conv.weight"])
        # second load comes from the cache (no request) and is checked against the recorded hash
        n = len(srv.hits)
        inceptionv1(pretrained=True, url=srv.url + "/inception5h.pth", cache_dir=cache, progress=False)
        assert len(srv.hits) == n
        # tampering with the cached file is detected
        tampered = bytearray(blob)
        tampered[len(blob) // 2] ^= 0xFF
        (cache / "inception5h.pth").write_bytes(bytes(tampered))
        with pytest.raises(vio.ChecksumError, match="delete it"):
            inceptionv1(pretrained=True, url=srv.url + "/inception5h.pth", cache_dir=cache, progress=False)


def test_inception_download_with_user_hash(tmp_path):
    blob = _state_dict_bytes(tmp_path)
    with _Server() as srv:
        srv.files["/w.pth"] = blob
        m = inceptionv1(pretrained=True, url=srv.url + "/w.pth", sha256=hashlib.sha256(blob).hexdigest(), cache_dir=tmp_path / "c", progress=False)
        assert isinstance(m, InceptionV1)


def test_inception_wrong_hash_or_truncated_leaves_no_file(tmp_path):
    blob = _state_dict_bytes(tmp_path)
    cache = tmp_path / "cache"
    with _Server() as srv:
        srv.files["/w.pth"] = blob
        srv.files["/t.pth"] = blob
        srv.truncate.add("/t.pth")
        with pytest.raises(vio.ChecksumError, match="mismatch"):
            inceptionv1(pretrained=True, url=srv.url + "/w.pth", sha256="0" * 64, cache_dir=cache, progress=False)
        assert not cache.exists() or list(cache.iterdir()) == []
        with pytest.raises((vio.CorruptFileError, ConnectionError)):
            inceptionv1(pretrained=True, url=srv.url + "/t.pth", cache_dir=cache, progress=False)
        assert not cache.exists() or list(cache.iterdir()) == []
        with pytest.raises(ConnectionError, match="could not download"):
            inceptionv1(pretrained=True, url=srv.url + "/missing.pth", cache_dir=cache, progress=False)


def test_inception_local_path_and_env_override(tmp_path, monkeypatch):
    _state_dict_bytes(tmp_path)
    m = inceptionv1(weights=tmp_path / "gen.pth")
    assert not any(p.requires_grad for p in m.parameters()) and not m.training
    monkeypatch.setenv("VISION_INTERP_INCEPTIONV1_WEIGHTS", str(tmp_path / "gen.pth"))
    inceptionv1(pretrained=True, url="http://127.0.0.1:9/never-contacted")
    monkeypatch.setenv("VISION_INTERP_INCEPTIONV1_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        inceptionv1(pretrained=True)
    bad = tmp_path / "bad.pth"
    torch.save({"conv2d0_pre_relu_conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not an inception5h state dict"):
        inceptionv1(weights=bad)


def test_mnist_download_from_mirrors_with_checksums(tmp_path, data_dir):
    """Missing files are fetched (falling back across mirrors), verified, and written atomically."""
    target = tmp_path / "data"
    raw = target / "mnist" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).symlink_to((data_dir / "mnist" / "raw" / name).resolve())
    with _Server() as srv:
        for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            srv.files[f"/good/{name}.gz"] = gzip.compress((data_dir / "mnist" / "raw" / name).read_bytes(), mtime=0)
        srv.files["/bad/t10k-labels-idx1-ubyte.gz"] = gzip.compress(b"not mnist")
        mirrors = (srv.url + "/missing/", srv.url + "/bad/", srv.url + "/good/")
        orig = vmnist.MNIST_MIRRORS
        vmnist.MNIST_MIRRORS = mirrors
        try:
            test = vmnist.load_mnist("test", target, download=True)
        finally:
            vmnist.MNIST_MIRRORS = orig
    assert len(test) == 10000
    assert vio.sha256_file(raw / "t10k-labels-idx1-ubyte") == vmnist.MNIST_FILES["t10k-labels-idx1-ubyte"][0]
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


def test_mnist_missing_without_download_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        vmnist.load_mnist("test", tmp_path, download=False)
