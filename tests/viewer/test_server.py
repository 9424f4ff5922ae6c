"""The viewer's HTTP server: what it lists, what it serves, and what it refuses."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from viewer_data import CAPTION, make_explanation, scene, write_run

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.viewer.catalog import Catalog, root_labels
from dualex.viewer.paths import Forbidden, NotFound, resolve_under
from dualex.viewer.server import make_server


@pytest.fixture(scope="module")
def served_root(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("served") / "run")


@pytest.fixture(scope="module")
def served(served_root):
    """The run directory served on a free port, with a secret file next to it and a few traps inside."""
    run_dir = served_root
    tmp_path = run_dir.parent
    secret = tmp_path / "secret.safetensors"
    make_explanation(caption="secret caption").save(secret)
    (tmp_path / "secret.txt").write_text("do not serve")
    (run_dir / "notes.txt").write_text("not an explanation")
    hidden = run_dir / ".hidden"
    hidden.mkdir()
    make_explanation().save(hidden / "h.safetensors")
    os.symlink(secret, run_dir / "escape.safetensors")
    os.symlink(tmp_path, run_dir / "outside_dir")
    os.symlink(run_dir / "explanations" / "ij" / "item0.safetensors", run_dir / "inside_link.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(run_dir / "plain.safetensors"))
    srv = make_server(run_dir, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, path: str, *, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    """A raw request (the path is sent exactly as given, no normalisation)."""
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    if body is not None:
        hdrs.setdefault("Content-Length", str(len(body)))
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    if body is not None:
        conn.send(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def test_pairs_group_methods_of_the_same_pair(served):
    status, headers, data = request(served, "/api/pairs")
    assert status == 200 and headers["Content-Type"] == "application/json"
    pairs = json.loads(data)["pairs"]
    by_caption = {p["caption"]: p for p in pairs}
    assert set(by_caption) == {CAPTION, "two blue squares"}  # no secret, no hidden, no plain safetensors
    item0 = by_caption[CAPTION]
    files = sorted(e["file"] for e in item0["entries"])
    # the in-root link shows the same pair; the escaping link and the linked-out folder are not listed
    assert files == ["explanations/fixlip/item0.safetensors", "explanations/ij/item0.safetensors",
                     "inside_link.safetensors"]
    assert sorted(e["method"] for e in item0["entries"]) == ["fixlip", "ij", "ij"]


def test_explanation_payload_matches_the_file(served, served_root):
    status, _, data = request(served, "/api/explanation?file=explanations/ij/item0.safetensors")
    assert status == 200
    d = json.loads(data)
    ex = Explanation.load(served_root / "explanations" / "ij" / "item0.safetensors")
    assert d["method"] == "ij" and d["words"] == ex.words() and d["grid"] == [4, 4]
    np.testing.assert_allclose(np.array(d["cross"]), ex.cross.numpy(), rtol=1e-5, atol=1e-7)
    assert d["completeness"]["target"] == pytest.approx(0.40)
    head, b64 = d["image"].split(",", 1)
    assert head == "data:image/png;base64"
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    np.testing.assert_array_equal(img, scene().numpy())


@pytest.mark.parametrize(
    "path",
    [
        "/api/explanation?file=../secret.safetensors",
        "/api/explanation?file=%2e%2e/secret.safetensors",
        "/api/explanation?file=%2e%2e%2fsecret.safetensors",
        "/api/explanation?file=%2E%2E%2Fsecret.safetensors",
        "/api/explanation?file=explanations/../../secret.safetensors",
        "/api/explanation?file=/etc/passwd",
        "/api/explanation?file=%2fetc%2fpasswd",
        "/api/explanation?file=..%5csecret.safetensors",
        "/api/explanation?file=escape.safetensors",  # symlink to a file outside the root
        "/api/explanation?file=outside_dir/secret.safetensors",  # symlinked folder outside the root
        "/api/explanation?file=C:/secret.safetensors",
        "/api/explanation?file=explanations%00.safetensors",
    ],
)
def test_traversal_is_forbidden(served, path):
    status, _, data = request(served, path)
    assert status == 403, (path, data)
    assert b"secret caption" not in data


def test_absolute_path_to_a_file_inside_the_root_is_forbidden_too(served, served_root):
    status, _, _ = request(served, f"/api/explanation?file={served_root}/explanations/ij/item0.safetensors")
    assert status == 403


@pytest.mark.parametrize(
    "path",
    [
        "/api/explanation?file=missing.safetensors",
        "/api/explanation?file=notes.txt",
        "/api/explanation?file=.hidden/h.safetensors",
        "/api/explanation?file=%252e%252e/secret.safetensors",  # double-encoded: a literal '%2e%2e' folder
        "/api/explanation?file=explanations",
        "/static/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/index.html",
        "/../secret.txt",
        "//etc/passwd",
        "/nothing",
    ],
)
def test_non_explanations_are_not_found(served, path):
    status, _, data = request(served, path)
    assert status == 404, (path, data)


def test_links_inside_the_root_are_served(served):
    status, _, data = request(served, "/api/explanation?file=inside_link.safetensors")
    assert status == 200 and json.loads(data)["file"] == "explanations/ij/item0.safetensors"


def test_bad_files_and_queries(served):
    assert request(served, "/api/explanation?file=plain.safetensors")[0] == 422  # no dualex metadata
    assert request(served, "/api/explanation")[0] == 400
    assert request(served, "/api/explanation?file=a&file=b")[0] == 400
    assert request(served, "/api/explanation?file=" + "a" * 5000)[0] == 414


def test_no_uploads_and_body_limit(served):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        status, _, data = request(served, "/api/pairs", method=method, body=b"x" * 10)
        assert status == 405 and b"read-only" in data
    status, _, _ = request(served, "/api/pairs", headers={"Content-Length": str(50 * 2**20)})
    assert status == 413


def test_host_header_guard_and_security_headers(served):
    assert request(served, "/", headers={"Host": "attacker.example:80"})[0] == 403
    status, headers, page = request(served, "/", headers={"Host": "localhost"})
    assert status == 200 and b'id="overlay"' in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, js = request(served, "/static/viewer.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"textScores" in js
    status, headers, body = request(served, "/api/pairs", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_resolve_under_directly(tmp_path):
    root = tmp_path.resolve()
    f = root / "a" / "b.safetensors"
    f.parent.mkdir()
    f.write_bytes(b"x")
    assert resolve_under(root, "a/b.safetensors") == f
    assert resolve_under(root, "a/./b.safetensors") == f
    for bad in ("", "../x", "a/../../x", "/a/b.safetensors", "a\\b.safetensors", "x\x00"):
        with pytest.raises(Forbidden):
            resolve_under(root, bad)
    os.symlink("/nonexistent/target.safetensors", root / "dangling.safetensors")
    with pytest.raises(Forbidden):  # a dangling link that points outside is still outside
        resolve_under(root, "dangling.safetensors")
    with pytest.raises(NotFound):
        resolve_under(root, "a/missing.safetensors")


def test_single_file_is_served_alone(run_dir):
    only = run_dir / "explanations" / "ij" / "item0.safetensors"
    srv = make_server(only, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        pairs = json.loads(request(srv, "/api/pairs")[2])["pairs"]
        assert [e["file"] for p in pairs for e in p["entries"]] == ["item0.safetensors"]
        assert request(srv, "/api/explanation?file=item0.safetensors")[0] == 200
        # a sibling in the same folder is not part of what was asked to be served
        make_explanation(method="other").save(only.parent / "item9.safetensors")
        assert request(srv, "/api/explanation?file=item9.safetensors")[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()


def test_make_server_refuses_what_it_cannot_serve(tmp_path):
    with pytest.raises(InputError, match="nothing to serve"):
        make_server(tmp_path / "missing", port=0)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not an explanation file"):
        make_server(tmp_path / "x.txt", port=0)


def test_catalog_groups_by_image_bytes_not_by_name(tmp_path):
    make_explanation().save(tmp_path / "one.safetensors")
    make_explanation(method="fixlip").save(tmp_path / "two.safetensors")
    other = scene().clone()
    other[0, 0] = 0
    make_explanation(image=other).save(tmp_path / "three.safetensors")
    groups = Catalog(Path(tmp_path)).groups()
    sizes = sorted(len(g["entries"]) for g in groups)
    assert sizes == [1, 2]


# ------------------------------------------------------------------------------------------ several roots
@pytest.fixture(scope="module")
def two_roots(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two runs called ``run`` in unrelated folders (a0/run: base model, b0/run: tuned model), and a secret
    file beside them; the tuned run links to the base run's file, to a folder above, and to itself."""
    base = write_run(tmp_path_factory.mktemp("a") / "run")
    tuned_dir = tmp_path_factory.mktemp("b") / "run"
    other = scene().clone()
    other[0, 0] = 0  # another model's input bytes: the pair is joined by run item id and caption
    make_explanation(model="tuned", image=other).save(tuned_dir / "explanations" / "ij" / "item0.safetensors")
    secret = tuned_dir.parent / "secret.safetensors"
    make_explanation(caption="secret caption").save(secret)
    os.symlink(base / "explanations" / "ij" / "item0.safetensors", tuned_dir / "into_base.safetensors")
    os.symlink(secret, tuned_dir / "escape.safetensors")
    os.symlink(tuned_dir.parent, tuned_dir / "outside_dir")
    os.symlink(tuned_dir / "explanations" / "ij" / "item0.safetensors", tuned_dir / "inside_link.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tuned_dir / "plain.safetensors"))
    return base, tuned_dir, secret


@pytest.fixture(scope="module")
def served_two(two_roots):
    base, tuned, _ = two_roots
    srv = make_server([base, tuned], "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_two_roots_join_pairs_under_labels(served_two):
    status, _, data = request(served_two, "/api/pairs")
    assert status == 200
    body = json.loads(data)
    assert body["roots"] == ["a0-run", "b0-run"]  # both are called "run": their parents tell them apart
    by_caption = {p["caption"]: p for p in body["pairs"]}
    assert set(by_caption) == {CAPTION, "two blue squares"}
    item0 = by_caption[CAPTION]["entries"]
    assert sorted(e["file"] for e in item0) == [
        "a0-run/explanations/fixlip/item0.safetensors", "a0-run/explanations/ij/item0.safetensors",
        "b0-run/explanations/ij/item0.safetensors", "b0-run/inside_link.safetensors"]
    assert {e["root"] for e in item0} == {"a0-run", "b0-run"}
    assert {e["model"] for e in item0 if e["root"] == "b0-run"} == {"tuned"}
    item1 = by_caption["two blue squares"]["entries"]
    assert [e["file"] for e in item1] == ["a0-run/explanations/ij/item1.safetensors"]


def test_two_roots_serve_each_file_from_its_own_root(served_two, two_roots):
    base, tuned, _ = two_roots
    for name, path, model in (("a0-run/explanations/ij/item0.safetensors", base, "hand-made"),
                              ("b0-run/explanations/ij/item0.safetensors", tuned, "tuned")):
        status, _, data = request(served_two, "/api/explanation?file=" + name)
        assert status == 200, data
        d = json.loads(data)
        assert d["file"] == name and d["model"] == model
        ex = Explanation.load(path / "explanations" / "ij" / "item0.safetensors")
        np.testing.assert_allclose(np.array(d["cross"]), ex.cross.numpy(), rtol=1e-5, atol=1e-7)
    status, _, data = request(served_two, "/api/explanation?file=b0-run/inside_link.safetensors")
    assert status == 200 and json.loads(data)["file"] == "b0-run/explanations/ij/item0.safetensors"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("b0-run/into_base.safetensors", 403),  # a link into the OTHER served root is still outside its own
        ("b0-run/../a0-run/explanations/ij/item0.safetensors", 403),
        ("b0-run/%2e%2e/secret.safetensors", 403),
        ("b0-run/escape.safetensors", 403),
        ("b0-run/outside_dir/secret.safetensors", 403),
        ("../secret.safetensors", 403),
        ("%2fetc%2fpasswd", 403),
        ("a0-run%5c..%5csecret.safetensors", 403),
        ("c0-run/explanations/ij/item0.safetensors", 404),  # unknown label
        ("explanations/ij/item0.safetensors", 404),  # a single root's name means nothing here
        ("a0-run", 404),
        ("a0-run/", 404),
        ("b0-run/.hidden.safetensors", 404),
        ("b0-run/missing.safetensors", 404),
    ],
)
def test_two_roots_refusals(served_two, path, expected):
    status, _, data = request(served_two, "/api/explanation?file=" + path)
    assert status == expected, (path, data)
    assert b"secret caption" not in data


def test_two_roots_errors_do_not_leak_absolute_paths(served_two, two_roots):
    status, _, data = request(served_two, "/api/explanation?file=b0-run/plain.safetensors")
    assert status == 422
    message = json.loads(data)["error"]
    assert str(two_roots[1]) not in message and str(two_roots[1].parent) not in message


def test_several_sources_file_and_folder_and_duplicates(two_roots):
    base, tuned, _ = two_roots
    one_file = tuned / "explanations" / "ij" / "item0.safetensors"
    srv = make_server([base, one_file, base], "127.0.0.1", 0, quiet=True)  # the repeated root is dropped
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        body = json.loads(request(srv, "/api/pairs")[2])
        assert body["roots"] == ["run", "item0"]  # a file is labelled by its stem
        files = sorted(e["file"] for p in body["pairs"] for e in p["entries"])
        assert "item0/item0.safetensors" in files and len(files) == 4
        assert request(srv, "/api/explanation?file=item0/item0.safetensors")[0] == 200
        # the single-file root serves that file only, even though its folder holds links
        assert request(srv, "/api/explanation?file=item0/../inside_link.safetensors")[0] == 403
        make_explanation(method="other").save(one_file.parent / "item9.safetensors")
        try:
            assert request(srv, "/api/explanation?file=item0/item9.safetensors")[0] == 404
        finally:
            (one_file.parent / "item9.safetensors").unlink()
    finally:
        srv.shutdown()
        srv.server_close()
    same = make_server([base, base], "127.0.0.1", 0, quiet=True)  # one root after all: today's names
    try:
        assert same.sources.single and same.catalog.groups()[0]["entries"][0]["file"].startswith("explanations/")
    finally:
        same.server_close()
    with pytest.raises(InputError, match="nothing to serve"):
        make_server([base, base.parent / "missing"], port=0)


def test_root_labels():
    assert root_labels([Path("/p/base"), Path("/q/tuned")]) == ["base", "tuned"]
    assert root_labels([Path("/x/run"), Path("/y/run"), Path("/z/other")]) == ["x-run", "y-run", "other"]
    assert root_labels([Path("/x/out/run"), Path("/y/out/run")]) == ["x-out-run", "y-out-run"]
    assert root_labels([Path("/a/run"), Path("/a/run.safetensors")]) == ["a-run", "a-run-2"]
    assert root_labels([Path("/x/my run"), Path("/x/.hidden"), Path("/r/ü")]) == ["my_run", "hidden", "_"]
