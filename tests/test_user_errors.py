"""Every user mistake gets one plain line; nothing is silently wrong, nothing hangs (issue 14).

The tables run each mistake through the command line (``dualex.cli.main``: exit code and the one
``dualex: error:`` line) and through the Python API (the `InputError` and its message). Checks that
must happen before an explanation is computed run with `explain_pair` replaced by a function that
fails the test if it is called. The bundled ``shapes`` model and tiny in-code models keep it fast.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import dualex
from dualex.cli import main
from dualex.errors import InputError, ModelNotAvailableError
from dualex.explanation import Explanation

SCENE = Path(dualex.__file__).parent / "assets" / "shapes" / "sample" / "scene.png"
CAPTION = "a large purple star"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def shapes() -> dualex.DualEncoder:
    return dualex.load("shapes", device="cpu")


@pytest.fixture
def cached_shapes(shapes: dualex.DualEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dualex.load("shapes")`` returns the module's model (after the real device check)."""
    from dualex.models import registry

    real = registry.load

    def load(name: str, *, device: Any = None, dtype: Any = None) -> dualex.DualEncoder:
        if name == "shapes":
            if device is not None:
                registry.check_device(device)
            return shapes
        return real(name, device=device, dtype=dtype)

    monkeypatch.setattr(dualex, "load", load)


@pytest.fixture
def no_explaining(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an explanation is computed (the check under test must come first)."""
    import dualex.methods

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the explanation was computed before the input was checked")

    monkeypatch.setattr(dualex.methods, "explain_pair", forbidden)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of ``dualex ARGV`` (argparse errors included)."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


def assert_one_line(err: str, pattern: str) -> None:
    import re

    lines = [ln for ln in err.strip().splitlines() if ln.startswith("dualex: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width × height`` (what a decompression bomb looks like to PIL)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    out = {"a_file": d / "plain.txt", "tiny": d / "tiny.png", "bomb": png_header_only(d / "bomb.png", 16000, 12000)}
    out["a_file"].write_text("x")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(out["tiny"])
    grey = (np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)  # 0..61425
    out["grey16"] = d / "grey16.png"
    Image.fromarray(grey).save(out["grey16"])
    return out


# ------------------------------------------------------------------------------- CLI: explain, checked early
EARLY_CASES = [
    # (id, extra argv, message pattern)
    ("unknown option", ["-O", "nosuch=1"], r"method 'ij' has no option 'nosuch'.*valid options: .*n_steps"),
    ("option typo", ["-O", "n_step=3"], r"has no option 'n_step': it is called 'n_steps'"),
    ("float n_steps", ["-O", "n_steps=1e8"], r"n_steps of method 'ij' must be an integer, got 100000000\.0"),
    ("bad option type", ["-O", "units=3"], r"units of method 'ij' must be 'cosine' or 'score'"),
    *[
        (f"--layer with {m}", ["--method", m, "--layer", "-1"], rf"--layer does not apply to method '{m}'.*ij")
        for m in ("random", "fixlip", "grad_eclip", "game", "interaction_cam", "interaction_lime")
    ],
    ("--n-steps with fixlip", ["--method", "fixlip", "--n-steps", "3"], r"--n-steps does not apply to method"),
    ("old lime name n_samples", ["--method", "interaction_lime", "-O", "n_samples=64"], r"called 'budget'"),
    ("old lime name keep_prob", ["--method", "interaction_lime", "-O", "keep_prob=0.3"], r"called 'p'"),
    ("unknown method", ["--method", "nosuch"], r"unknown method 'nosuch'"),
    ("device bogus", ["--device", "bogus"], r"unknown device 'bogus'"),
    ("figure suffix", ["--out", "{tmp}/fig.txt"], r"--out must end in \.png"),
    ("out under a file", ["--out", "{a_file}/fig.png"], r"--out .* cannot be created: .* is a file"),
    ("save is a folder", ["--save", "{tmp}"], r"--save .* is a folder; give a file name"),
    ("save under a file", ["--save", "{a_file}/ex.safetensors"], r"--save .* is a file, not a folder"),
    ("span not in caption", ["--span", "green circle"], r"span 'green circle' does not occur in the caption"),
    ("box outside", ["--box", "0,0,500,500"], r"outside the image of size 224x224"),
    ("negative box parsed", ["--box", "-10,-10,20,20"], r"box \(-10\.0, -10\.0, 20\.0, 20\.0\) lies outside"),
    ("empty box", ["--box", "20,20,10,30"], r"box .* is empty"),
]


@pytest.mark.parametrize(("extra", "pattern"), [c[1:] for c in EARLY_CASES], ids=[c[0] for c in EARLY_CASES])
def test_cli_explain_refuses_before_explaining(extra, pattern, files, tmp_path, capsys, cached_shapes, no_explaining):
    argv = [a.format(tmp=tmp_path, a_file=files["a_file"]) for a in extra]
    rc, err = run_cli(["explain", str(SCENE), CAPTION, "--model", "shapes", *argv], capsys)
    assert rc == 2
    assert_one_line(err, pattern)


IMAGE_CASES = [
    ("tiny", r"1×1 pixels .* smaller than one 32×32 patch"),
    ("bomb", r"16000×12000 = 192 megapixels, more than the limit of \d+ megapixels"),
    ("a_file", r"cannot read .* as an image"),
]


@pytest.mark.parametrize(("key", "pattern"), IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_cli_explain_refuses_images(key, pattern, files, capsys, cached_shapes, no_explaining):
    rc, err = run_cli(["explain", str(files[key]), CAPTION, "--model", "shapes"], capsys)
    assert rc == 2
    assert_one_line(err, pattern)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cli_cuda_without_gpu(capsys, cached_shapes, no_explaining):
    rc, err = run_cli(["explain", str(SCENE), CAPTION, "--device", "cuda"], capsys)
    assert rc == 2
    assert_one_line(err, r"no CUDA GPU is usable on this machine")


def test_cli_refused_out_writes_no_save(files, tmp_path, capsys, cached_shapes, no_explaining):
    save = tmp_path / "ex.safetensors"
    rc, err = run_cli(["explain", str(SCENE), CAPTION, "--save", str(save), "--out", f"{files['a_file']}/f.png"],
                      capsys)  # fmt: skip
    assert rc == 2 and "--out" in err and not save.exists()


def test_cli_n_steps_beyond_memory_is_refused(capsys, cached_shapes):
    rc, err = run_cli(["explain", str(SCENE), CAPTION, "--n-steps", "100000000"], capsys)
    assert rc == 2
    assert_one_line(err, r"n_steps=100000000 needs at least [\d,.]+ GiB .* use n_steps <= \d+")


def test_cli_accepts_negative_box_and_shared_vocabulary(tmp_path, capsys, cached_shapes):
    rc, err = run_cli(["explain", str(SCENE), CAPTION, "--method", "random", "-O", "progress=false",
                       "--box", "-0.5,-0.5,60,60", "--json"], capsys)  # fmt: skip
    assert rc == 0, err


def test_cli_ij_prints_no_torch_warnings(capsys, cached_shapes):
    rc, err = run_cli(["explain", str(SCENE), CAPTION, "--n-steps", "1", "--span", "star"], capsys)
    assert rc == 0, err
    assert "FutureWarning" not in err and "jit" not in err


HARD_NEGATIVES = ["mismatch", "--hard-negatives", "--model", "shapes", "--dataset", "shapes:"]
OTHER_CLI_CASES = [
    ("empty caption", ["explain", str(SCENE), "  "], r"caption 0 is empty"),
    ("unknown model", ["explain", str(SCENE), CAPTION, "--model", "nosuch:x"], r"unknown model name 'nosuch:x'"),
    ("bench option typo", ["bench", "--method", "fixlip", "-O", "n_samples=8"], r"'n_samples': it is called 'budget'"),
    ("bench option of another method", ["bench", "--method", "random", "-O", "layer=-1"],
     r"'random' has no option 'layer'"),
    ("hard negatives option typo", [*HARD_NEGATIVES, "-O", "n_step=2"], r"'n_step': it is called 'n_steps'"),
    ("hard negatives reader typo", [*HARD_NEGATIVES, "-D", "objects=2"], r"dataset 'shapes' has no option 'objects'"),
]


@pytest.mark.parametrize(("argv", "pattern"), [c[1:] for c in OTHER_CLI_CASES], ids=[c[0] for c in OTHER_CLI_CASES])
def test_cli_other_commands(argv, pattern, capsys, cached_shapes, no_explaining):
    rc, err = run_cli(argv, capsys)
    assert rc == 2
    assert_one_line(err, pattern)


# ------------------------------------------------------------------------------------ CLI: help texts
@pytest.mark.parametrize(("command", "words"), [
    (["methods", "--help"], "order"),
    (["bench", "--help"], "median"),
    (["mismatch", "--help"], "-D n=N"),
])  # fmt: skip
def test_help_texts(command, words, capsys):
    with pytest.raises(SystemExit):
        main(command)
    out = capsys.readouterr().out
    assert words in " ".join(out.split())
    assert "shapes:N" not in out


# ------------------------------------------------------------------------------------------- run directories
def evaluate_args(out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", "shapes", "--dataset", "shapes:", "-D", "n=1", "--methods", "random",
            "--metrics", "completeness", "--no-progress", "--out", str(out), *extra]  # fmt: skip


EVALUATE_CASES = [
    ("method option typo", ["-O", "random.sed=1"], r"method 'random' has no option 'sed'; did you mean 'seed'"),
    ("dataset option typo", ["-D", "nn=3"], r"dataset 'shapes' has no option 'nn'; did you mean 'n'"),
    ("option of another method", ["-O", "ij.n_steps=2"], r"names method 'ij', which is not in --methods"),
]


@pytest.mark.parametrize(("extra", "pattern"), [c[1:] for c in EVALUATE_CASES], ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_refuses_before_writing(extra, pattern, tmp_path, capsys, cached_shapes):
    out = tmp_path / "run"
    rc, err = run_cli(evaluate_args(out, *extra), capsys)
    assert rc == 2
    assert_one_line(err, pattern)
    assert not (out / "manifest.json").exists()  # the corrected command can use the same directory


def test_evaluate_out_under_a_file(files, capsys, cached_shapes):
    rc, err = run_cli(evaluate_args(files["a_file"] / "run"), capsys)
    assert rc == 2
    assert_one_line(err, r"run directory .* cannot be created: .* is a file")


def test_evaluate_lock(tmp_path, capsys, cached_shapes):
    out = tmp_path / "run"
    out.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (out / ".lock").write_text(json.dumps(holder))  # a live process of this host holds it
    rc, err = run_cli(evaluate_args(out), capsys)
    assert rc == 2
    assert_one_line(err, rf"in use by another dualex evaluate \(pid {os.getpid()} on host ")
    assert not (out / "manifest.json").exists()
    dead = {**holder, "pid": 2**22 + 4321}  # above Linux's pid_max: no such process
    (out / ".lock").write_text(json.dumps(dead))
    rc, err = run_cli(evaluate_args(out), capsys)
    assert rc == 0, err  # a stale lock is taken over
    assert not (out / ".lock").exists()  # and given back


def test_io_errors_are_retried_without_retry_errors(tmp_path, monkeypatch, shapes):
    from dualex.evaluation import read_run
    from dualex.evaluation.run import MetricOptions, evaluate

    def failing_save(self: Explanation, path: Any) -> Path:
        raise PermissionError(13, "Permission denied", str(path))

    out = tmp_path / "run"
    metrics = MetricOptions(metrics="completeness")
    with monkeypatch.context() as m:
        m.setattr(Explanation, "save", failing_save)
        first = evaluate(shapes, "shapes:", ["random"], out, dataset_options={"n": 1}, metrics=metrics)
    assert first.errors == 1
    second = evaluate(shapes, "shapes:", ["random"], out, dataset_options={"n": 1}, metrics=metrics)
    assert second.units_run == 1 and second.errors == 0
    pair = read_run(out).query("level == 'pair'")
    assert len(pair) == 1 and pair["error"].isna().all()


# ------------------------------------------------------------------------------------ hub ids never hang
@pytest.fixture
def silent_hub() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


@pytest.mark.parametrize("endpoint", ["silent", "http://no-such-host.invalid"])
def test_hub_id_fails_fast_without_retries(endpoint, silent_hub, monkeypatch, capsys):
    from huggingface_hub import constants

    from dualex.models import hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", silent_hub if endpoint == "silent" else endpoint)
    monkeypatch.setattr(hf, "HUB_TIMEOUT", 1.0)
    with pytest.raises(ModelNotAvailableError, match=r"not in the local cache and the hub at .* (did not answer "
                       r"within 1 s|cannot be reached).*load it as 'hf:DIR'"):  # fmt: skip
        dualex.load("hf:dualex-tests/never-cached-model", device="cpu")
    assert "Retrying" not in capsys.readouterr().err


def test_openclip_random_weights_only_on_request():
    pytest.importorskip("open_clip")
    for name in ("openclip:ViT-B-32@", "openclip:ViT-B-32"):
        with pytest.raises(InputError, match=r"(empty pretrained tag|names no weights).*'openclip:ViT-B-32@random'"):
            dualex.load(name)


# ------------------------------------------------------------------------------------------- explanation files
@pytest.fixture(scope="module")
def saved(shapes: dualex.DualEncoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    from safetensors import safe_open

    ex = dualex.explain(shapes, SCENE, CAPTION, method="random")
    path = ex.save(tmp_path_factory.mktemp("ex") / "good.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["dualex"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return path, meta, tensors


def _write(path: Path, meta: Any, tensors: dict[str, torch.Tensor], raw: str | None = None) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"dualex": raw if raw is not None else json.dumps(meta)})
    return path


def _bad_files(saved: tuple[Path, dict, dict], d: Path) -> dict[str, tuple[Path, str]]:
    path, meta, tensors = saved
    out: dict[str, tuple[Path, str]] = {}
    out["bad json"] = (_write(d / "json.safetensors", None, tensors, raw="{not json"), r"not valid JSON")
    no_score = {k: v for k, v in meta.items() if k != "score"}
    out["missing field"] = (_write(d / "missing.safetensors", no_score, tensors), r"no 'score' field")
    out["string score"] = (_write(d / "str.safetensors", {**meta, "score": "0.9"}, tensors),
                           r"'score' must be a number")  # fmt: skip
    extra = {**meta, "tokens": [*meta["tokens"], "x"]}
    out["token count"] = (_write(d / "count.safetensors", extra, tensors), r"tokens but a 'special' tensor")
    out["version"] = (_write(d / "version.safetensors", {**meta, "version": 99}, tensors),
                      r"unknown explanation format version 99")  # fmt: skip
    nan = dict(tensors)
    nan["cross"] = tensors["cross"].clone()
    nan["cross"][0, 0] = float("nan")
    unchecked = {k: v for k, v in meta.items() if k != "checksum"}
    out["nan"] = (_write(d / "nan.safetensors", unchecked, nan), r"tensor 'cross' holds NaN")
    flipped = d / "flipped.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # one bit of the last tensor's data
    flipped.write_bytes(bytes(data))
    out["flipped bit"] = (flipped, r"do not match the stored checksum")
    return out


BAD_FILE_CASES = ["bad json", "missing field", "string score", "token count", "version", "nan", "flipped bit"]


@pytest.mark.parametrize("case", BAD_FILE_CASES)
def test_bad_explanation_files(case, saved, tmp_path):
    path, pattern = _bad_files(saved, tmp_path)[case]
    with pytest.raises(InputError, match=pattern) as info:
        Explanation.load(path)
    assert str(path) in str(info.value)


def test_good_file_still_loads(saved):
    ex = Explanation.load(saved[0])
    assert ex.method == "random" and saved[1]["checksum"].startswith("sha256:")
    assert saved[1]["metadata_checksum"].startswith("sha256:")


@pytest.mark.parametrize("edit", [{"text": "a small blue square"}, {"score": 99.0}, {"params": {"seed": 3}}])
def test_edited_header_is_refused(edit, saved, tmp_path):
    _, meta, tensors = saved
    path = _write(tmp_path / "edited.safetensors", {**meta, **edit}, tensors)
    with pytest.raises(InputError, match=r"metadata .* does not match its stored checksum") as info:
        Explanation.load(path)
    assert str(path) in str(info.value)


def test_file_from_before_the_metadata_checksum_loads(saved, tmp_path):
    _, meta, tensors = saved
    old = {k: v for k, v in meta.items() if k != "metadata_checksum"}  # as dualex 0.2 wrote them
    ex = Explanation.load(_write(tmp_path / "old.safetensors", old, tensors))
    assert ex.text == meta["text"] and ex.score == meta["score"]


def test_saved_file_mode_like_any_new_file(saved, tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(saved[0].stat().st_mode) == 0o666 & ~umask


def test_viewer_and_export_with_bad_files(saved, tmp_path, capsys):
    import shutil
    import urllib.error
    import urllib.request

    from dualex.viewer.export import export_html
    from dualex.viewer.server import make_server

    shutil.copy(saved[0], tmp_path / "good.safetensors")
    bad = _bad_files(saved, tmp_path)
    server = make_server(tmp_path, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def get(query: str) -> tuple[int, dict]:
            try:
                with urllib.request.urlopen(server.url + "api/explanation?" + query, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, body = get(f"file={bad['string score'][0].name}")
        assert status == 422 and "'score' must be a number" in body["error"]
        status, body = get("file=good.safetensors&a=1&b=2&c=3&d=4")
        assert status == 400 and "too many query fields" in body["error"]
    finally:
        server.shutdown()
        server.server_close()
    out = export_html(tmp_path, tmp_path / "page.html")
    err = capsys.readouterr().err
    assert out.exists() and "skipping nan.safetensors" in err and "good.safetensors" in out.read_text()


# ----------------------------------------------------------------------------------------------- Python API
API_CASES = [
    ("caption None", lambda m, ex: dualex.explain(m, SCENE, None), r"text must be a caption .* got NoneType"),
    ("image_map(3)", lambda m, ex: ex.image_map(3), r"cannot use int 3 as a caption span.*\(one token: \[3\]\)"),
    ("text_scores(str)", lambda m, ex: ex.text_scores("73,10,80,20"), r"cannot use str '73,10,80,20' as a box"),
    ("unknown option", lambda m, ex: dualex.explain(m, SCENE, CAPTION, nosuch=1), r"has no option 'nosuch'"),
    ("bad device", lambda m, ex: dualex.explain(m, SCENE, CAPTION, device="gpu0"), r"unknown device 'gpu0'"),
    ("1x1 array", lambda m, ex: dualex.explain(m, np.zeros((1, 1, 3), np.uint8), CAPTION), r"too small"),
    ("negative floats", lambda m, ex: m.prepare(np.full((64, 64, 3), -0.5), CAPTION), r"float values in \[-0\.5"),
    ("int32 out of range", lambda m, ex: m.prepare(np.full((64, 64), 70000, np.int32), CAPTION), r"int32 values"),
]


@pytest.mark.parametrize(("call", "pattern"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_errors(call, pattern, shapes):
    ex = dualex.explain(shapes, SCENE, CAPTION, method="random")
    with pytest.raises(InputError, match=pattern):
        call(shapes, ex)


def test_wrap_without_tokenizer(tiny_clip):
    with pytest.raises(InputError, match=r"needs its tokenizer: dualex.wrap\(module, tokenizer="):
        dualex.wrap(tiny_clip.module)


def test_16_bit_and_float_images_are_scaled(files, shapes):
    grey = np.asarray(Image.open(files["grey16"]), dtype=np.float64) / 257.0
    from dualex.images import load_image

    img = np.asarray(load_image(files["grey16"]), dtype=np.float64)
    assert img.shape == (64, 64, 3) and np.abs(img[..., 0] - grey).max() <= 0.5  # not the all-white clip
    f = Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64), mode="F")
    assert abs(np.asarray(load_image(f), dtype=np.float64).mean() - 127.5) < 1.0
    u16 = np.full((40, 40, 3), 65535, np.uint16)
    assert np.asarray(load_image(u16)).min() == 255


def test_long_caption_warns_once_and_span_errors_say_so(shapes):
    caption = "a red circle " * 30 + "and a tiny blue square"
    with pytest.warns(UserWarning, match=r"longer than the model's 64-token context: its last \d+ word\(s\)") as rec:
        pair = shapes.prepare(SCENE, caption)
    assert len([w for w in rec if "context" in str(w.message)]) == 1
    assert "tiny blue square" in str(rec[0].message) or "..." in str(rec[0].message)
    from dualex.spans import span_positions

    t = pair.text
    with pytest.raises(InputError, match=r"does not fit the model's context"):
        span_positions("blue square", text=caption, tokens=t.tokens[0], special=t.special[0], offsets=t.offsets[0])


def test_non_ascii_tokens_show_their_text(shapes):
    caption = "un café très joli 🐶"
    ex = dualex.explain(shapes, SCENE, caption, method="random")
    shown = [w for w, s in zip(ex.words(), ex.special.tolist(), strict=True) if not s]
    assert "café" in shown and "🐶" in shown and not any("Ã" in w or "ð" in w for w in shown)
    assert ex.span("café").numel() == 1 and ex.span("🐶").numel() >= 1
    assert ex.span("très").numel() >= 1
