"""The viewer's contrast page: saved contrasts listed and served side by side, nothing outside the root."""

from __future__ import annotations

import json
import threading

import pytest

import dualex
from dualex.testing import random_image, tiny_hf_clip
from dualex.viewer.server import make_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("contrasts") / "out"
    model = tiny_hf_clip()
    con = dualex.contrast(model, random_image(0), "a red dog", "two cats", n_steps=3)
    con.save(root / "image_x")
    dualex.contrast(model, "a red dog", random_image(1), random_image(2), n_steps=3).save(root / "caption_x")
    srv = make_server(root, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv, con
    srv.shutdown()
    srv.server_close()


def get(srv, path: str) -> tuple[int, dict]:
    import http.client

    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    ctype = resp.getheader("Content-Type") or ""
    return resp.status, (json.loads(body) if ctype.startswith("application/json") else {"text": body.decode()})


def test_contrasts_are_listed_and_served_side_by_side(served):
    srv, con = served
    status, data = get(srv, "/api/contrasts")
    assert status == 200
    assert [c["name"] for c in data["contrasts"]] == ["caption_x", "image_x"]
    assert data["contrasts"][1]["title"] == "a red dog vs two cats"
    status, c = get(srv, "/api/contrast?name=image_x")
    assert status == 200 and c["x_side"] == "image" and c["labels"] == ["a red dog", "two cats"]
    assert c["difference"] == pytest.approx(con.difference, abs=1e-6)
    assert len(c["difference_map"]) == con.a.grid[0]
    assert c["a"]["text"] == "a red dog" and c["b"]["text"] == "two cats"
    assert abs(c["decomposition"]["residual"]) <= 1e-4
    status, t = get(srv, "/api/contrast?name=caption_x")
    assert status == 200 and t["x_side"] == "text" and "difference_scores" in t
    status, page = get(srv, "/contrast.html")
    assert status == 200 and "contrast.js" in page["text"]
    status, js = get(srv, "/static/contrast.js")
    assert status == 200 and "/api/contrast?name=" in js["text"]


@pytest.mark.parametrize(("name", "code"), [("../out", 403), ("/etc", 403), ("missing", 404), ("image_x/..", 403)])
def test_contrast_names_stay_under_the_root(served, name, code):
    srv, _ = served
    status, _ = get(srv, f"/api/contrast?name={name}")
    assert status == code
    status, _ = get(srv, "/api/contrast")
    assert status == 400
