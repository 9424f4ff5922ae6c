"""The self-contained HTML export and the `dualex serve` / `dualex export` commands."""

from __future__ import annotations

import json
import re

import pytest
from viewer_data import make_explanation

from dualex.cli import build_parser, main
from dualex.errors import InputError
from dualex.viewer.export import collect, export_html


def _embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="dualex-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_export_inlines_everything(run_dir, tmp_path):
    out = export_html(run_dir, tmp_path / "view.html")
    page = out.read_text(encoding="utf-8")
    # nothing is fetched: no external script/style/image references, and a CSP that allows none
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page
    data = _embedded(page)
    assert sorted(data["explanations"]) == [
        "explanations/fixlip/item0.safetensors",
        "explanations/ij/item0.safetensors",
        "explanations/ij/item1.safetensors",
    ]
    assert len(data["pairs"]) == 2
    assert data["explanations"]["explanations/ij/item0.safetensors"]["image"].startswith("data:image/png;base64,")
    assert "function textScores" in page  # the script itself is inlined


def test_export_escapes_captions_that_look_like_markup(tmp_path):
    nasty = "a </script><script>alert(1)</script> cat"
    make_explanation(caption=nasty).save(tmp_path / "x.safetensors")
    page = export_html(tmp_path / "x.safetensors", tmp_path / "x.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page
    assert _embedded(page)["explanations"]["x.safetensors"]["text"] == nasty


def test_export_limit_and_errors(run_dir, tmp_path_factory, capsys):
    tmp_path = tmp_path_factory.mktemp("empty")
    data = collect(run_dir, limit=1)
    assert len(data["explanations"]) == 1
    assert "exporting the first 1" in capsys.readouterr().err
    with pytest.raises(InputError, match="no dualex explanation files"):
        collect(tmp_path)
    with pytest.raises(InputError, match=r"\.html"):
        export_html(run_dir, tmp_path / "view.txt")
    with pytest.raises(InputError, match="nothing to export"):
        collect(tmp_path / "missing")


def test_cli_export_and_serve_are_wired(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["export", "--html", str(run_dir), "--out", str(out)]) == 0
    assert out.exists() and "viewer written to" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--out", str(out)]) == 2  # no format chosen
    assert "--html" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", str(run_dir)])
    assert args.host == "127.0.0.1" and args.func.__name__ == "run_serve"


def test_export_of_two_roots_joins_their_pairs(run_dir, tmp_path, capsys):
    from viewer_data import scene

    other = scene().clone()
    other[0, 0] = 0
    tuned = tmp_path / "elsewhere" / "tuned"
    make_explanation(model="tuned", image=other).save(tuned / "explanations" / "ij" / "item0.safetensors")
    page = export_html([run_dir, tuned], tmp_path / "two.html").read_text(encoding="utf-8")
    data = _embedded(page)
    assert sorted(data["explanations"]) == [
        "run/explanations/fixlip/item0.safetensors",
        "run/explanations/ij/item0.safetensors",
        "run/explanations/ij/item1.safetensors",
        "tuned/explanations/ij/item0.safetensors",
    ]
    assert all(data["explanations"][f]["file"] == f for f in data["explanations"])
    joined = [p for p in data["pairs"] if len(p["entries"]) == 3]
    assert len(joined) == 1 and {e["model"] for e in joined[0]["entries"]} == {"hand-made", "tuned"}
    assert str(tmp_path) not in page  # no absolute path of either root is embedded
    # the command line takes several paths too
    out = tmp_path / "cli2.html"
    assert main(["export", "--html", str(run_dir), str(tuned), "--out", str(out)]) == 0
    assert sorted(_embedded(out.read_text(encoding="utf-8"))["explanations"]) == sorted(data["explanations"])
    args = build_parser().parse_args(["serve", str(run_dir), str(tuned), "--port", "0"])
    assert args.path == [run_dir, tuned] and args.port == 0
    with pytest.raises(InputError, match="nothing to export"):
        collect([run_dir, tmp_path / "missing"])


@pytest.mark.parametrize("damage", ["truncated", "checksum"])
def test_export_cli_warns_and_fails_on_an_unreadable_file(damage, tmp_path, capsys):
    src = tmp_path / "src"
    good = make_explanation().save(src / "good.safetensors")
    bad = make_explanation(caption="a blue square").save(src / "bad.safetensors")
    data = bytearray(bad.read_bytes())
    if damage == "truncated":
        bad.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-5] ^= 0x10
        bad.write_bytes(bytes(data))
    assert main(["export", "--html", str(src), "--out", str(tmp_path / "page.html")]) != 0
    err = capsys.readouterr().err
    assert "warning: skipping bad.safetensors" in err and "1 file(s) could not be read" in err
    assert "Traceback" not in err
    page = _embedded((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert sorted(page["explanations"]) == [good.name]
