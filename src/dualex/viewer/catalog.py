"""What the viewer shows: explanation files found under a directory, grouped by (image, caption).

A directory may hold explanations written by ``dualex explain --save`` (anywhere, any name) or a run
directory of ``dualex evaluate`` (``explanations/<method>/<item>.safetensors``). Both are handled the
same way: every ``*.safetensors`` file under the root (recursively, hidden folders skipped, symbolic
links not followed out of the root) whose header carries dualex metadata is listed, and files that
explain the same (image, caption) pair are grouped so the viewer can switch between their methods.

Two files show the same pair when their captions are equal and their images are byte-identical (a
SHA-1 of the stored model-input image), or, for text-text bi-encoders, their second sentences are
equal. Files that keep no image are grouped by caption and file name (the item id in a run directory).
Files laid out as in a run directory (``explanations/<method>/<item>.safetensors``) with the same item
id and caption are the same pair too, even when their model-input images differ: that is how the runs
of two models (served from a directory that holds both) meet in one pair, to be compared side by side.

Several roots (``dualex serve RUN_A RUN_B``, possibly in unrelated places) are served together by
`Sources`: each root gets a short unique label (its directory name, or a file's stem, lengthened by its
parent folders or numbered when two are equal) that prefixes its file names (``label/relative/path``),
so files of the same pair under different roots meet in one group exactly as runs under one parent do.
With one root, names carry no label (``relative/path``).

`explanation_payload` turns one `Explanation` into the JSON the page draws from (numbers rounded to 6
significant digits, the image as a PNG data URL); the HTML export inlines the same payloads.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.viewer.paths import EXPLANATION_SUFFIX, NotFound, check_name, relative_name, resolve_under

MAX_FILES = 20_000


@dataclass(frozen=True)
class Entry:
    """One explanation file as listed by the catalogue (header facts only; tensors not loaded)."""

    file: str  # path relative to the root, "/"-separated
    method: str
    model: str
    caption: str
    score: float | None
    label: str  # what identifies the image: file stem, or the second sentence
    key: str  # group key
    item_key: str | None = None  # run-directory files: caption + item id (joins runs of different models)
    root: str = ""  # label of the root the file lies under ("" when a single root is served)


def iter_explanation_files(root: Path, *, max_files: int = MAX_FILES) -> Iterator[Path]:
    """``*.safetensors`` files under ``root`` in sorted order: hidden names and links out of ``root`` skipped."""
    root = root.resolve()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(EXPLANATION_SUFFIX):
                continue
            p = Path(dirpath) / name
            try:
                resolved = p.resolve(strict=True)
            except OSError:
                continue
            if not resolved.is_relative_to(root) or not resolved.is_file():
                continue
            yield p
            count += 1
            if count >= max_files:
                return


def read_entry(root: Path, path: Path) -> Entry | None:
    """Header facts of one file, or None if it is not a readable dualex explanation."""
    return read_entry_checked(root, path)[0]


def read_entry_checked(root: Path, path: Path) -> tuple[Entry | None, str | None]:
    """``(entry, None)`` for a dualex explanation, ``(None, None)`` for another safetensors file (model
    weights, say), ``(None, reason)`` for a file that cannot be read as safetensors at all (truncated,
    damaged, unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("dualex")
            if raw is None:
                return None, None
            meta = json.loads(raw)
            image_hash = None
            if "image" in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                image_hash = hashlib.sha1(np.ascontiguousarray(f.get_tensor("image")).tobytes()).hexdigest()
    except Exception as exc:  # not listed; `Catalog.unreadable` names it
        return None, f"not a readable safetensors file ({str(exc).strip() or type(exc).__name__})"
    if not isinstance(meta, dict) or meta.get("format") != "dualex.explanation":
        return None, None
    caption = str(meta.get("text", ""))
    second = meta.get("image_text")
    stem = path.stem
    if second is not None:
        label, identity = str(second), "text:" + str(second)
    elif image_hash is not None:
        label, identity = stem, "image:" + image_hash
    else:
        label, identity = stem, "file:" + stem
    key = hashlib.sha1(json.dumps([identity, caption]).encode()).hexdigest()[:16]
    item_key = None
    if len(path.parts) >= 3 and path.parent.parent.name == "explanations":
        item_key = hashlib.sha1(json.dumps(["item:" + stem, caption]).encode()).hexdigest()[:16]
    score = meta.get("score")
    return Entry(
        file=relative_name(root, path),
        method=str(meta.get("method", "?")),
        model=str(meta.get("model", "")),
        caption=caption,
        score=float(score) if isinstance(score, (int, float)) else None,
        label=label,
        key=key,
        item_key=item_key,
    ), None


class Catalog:
    """The explanation files under ``root`` (or one file), rescanned cheaply on each `groups` call.

    Header reads are cached by (size, mtime), so a rescan of an unchanged run costs one ``stat`` per file.
    """

    def __init__(self, root: Path, *, only: Path | None = None, max_files: int = MAX_FILES) -> None:
        self.root = root.resolve()
        self.only = only.resolve() if only is not None else None
        self.max_files = max_files
        self._cache: dict[str, tuple[tuple[int, int], Entry | None, str | None]] = {}
        self._unreadable: dict[str, str] = {}
        self._lock = threading.Lock()

    def entries(self) -> list[Entry]:
        """The explanation files under the root (or the one file), readable ones as entries."""
        if self.only is not None:
            files = [self.only]
        else:
            files = list(iter_explanation_files(self.root, max_files=self.max_files))
        out = []
        unreadable = {}
        with self._lock:
            for p in files:
                try:
                    st = p.stat()
                except OSError:
                    continue
                sig = (st.st_size, st.st_mtime_ns)
                name = str(p)
                hit = self._cache.get(name)
                if hit is None or hit[0] != sig:
                    hit = (sig, *read_entry_checked(self.root, p))
                    self._cache[name] = hit
                if hit[1] is not None:
                    out.append(hit[1])
                elif hit[2] is not None:
                    unreadable[relative_name(self.root, p)] = hit[2]
            self._unreadable = unreadable
        return out

    def unreadable(self) -> dict[str, str]:
        """Files the last `entries` call found but could not read (relative name -> reason)."""
        with self._lock:
            return dict(self._unreadable)

    def groups(self) -> list[dict[str, Any]]:
        """The pairs: ``[{key, caption, label, entries: [{file, method, model, score}]}]``, sorted."""
        return group_entries(self.entries())


def group_entries(entries: list[Entry]) -> list[dict[str, Any]]:
    """Group catalogue entries by pair; entries within a pair sorted by method, then model, then file.

    Entries sharing a ``key`` (same image bytes and caption) or an ``item_key`` (same run item and
    caption) are one pair; the group takes the key of its first entry.
    """
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for e in entries:
        if e.item_key is not None:
            a, b = find(e.key), find("item:" + e.item_key)
            if a != b:
                parent[b] = a
    groups: dict[str, dict[str, Any]] = {}
    for e in entries:
        g = groups.setdefault(find(e.key), {"key": e.key, "caption": e.caption, "label": e.label, "entries": []})
        row: dict[str, Any] = {"file": e.file, "method": e.method, "model": e.model, "score": e.score}
        if e.root:
            row["root"] = e.root
        g["entries"].append(row)
    for g in groups.values():
        g["entries"].sort(key=lambda d: (d["method"], d["model"], d["file"]))
    return sorted(groups.values(), key=lambda g: (g["label"], g["caption"]))


# ------------------------------------------------------------------------------------------------ roots
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")


def _clean_label(name: str) -> str:
    return _LABEL_CHARS.sub("_", name).lstrip(".") or "root"


def root_labels(paths: Sequence[Path]) -> list[str]:
    """Short unique labels for resolved paths: the last component (a file's stem), prefixed by parent
    folders (``a-out``, ``b-out``) while two are equal, then numbered (``out-2``) if still equal.

    Labels hold only ``A-Z a-z 0-9 . _ + -``, never start with ``.`` and never contain ``/``.
    """

    def parts(p: Path) -> list[str]:
        names = [p.stem if p.suffix == EXPLANATION_SUFFIX else p.name, *(q.name for q in p.parents)]
        return [_clean_label(n) for n in names if n]

    chains = [parts(p) for p in paths]
    depth = [1] * len(paths)
    labels = ["-".join(reversed(c[:1])) for c in chains]
    for _ in range(max((len(c) for c in chains), default=1)):
        changed = False
        for i, lab in enumerate(labels):
            if labels.count(lab) > 1 and depth[i] < len(chains[i]):
                depth[i] += 1
                changed = True
        labels = ["-".join(reversed(c[:d])) for c, d in zip(chains, depth, strict=True)]
        if not changed:
            break
    seen: set[str] = set()
    out = []
    for lab in labels:
        unique, n = lab, 1
        while unique in seen:
            n += 1
            unique = f"{lab}-{n}"
        seen.add(unique)
        out.append(unique)
    return out


@dataclass(frozen=True)
class Root:
    """One served root: a directory (``only`` None) or a single file ``only`` in directory ``path``."""

    label: str  # prefix of its file names; "" when it is the only root
    path: Path  # resolved directory
    only: Path | None = None  # resolved file, when one file was given


class Sources:
    """The roots a viewer serves or exports (one or several), their catalogues, and name resolution.

    A file is named ``label/relative/path`` (``relative/path`` when there is one root); `resolve` maps a
    client-supplied name back to a file under the root its label names, and nowhere else.
    """

    def __init__(self, roots: Sequence[Root], *, max_files: int = MAX_FILES) -> None:
        if not roots:
            raise InputError("give at least one run directory, folder or explanation file")
        self.roots = list(roots)
        self.by_label = {r.label: r for r in self.roots}
        self.catalogs = {r.label: Catalog(r.path, only=r.only, max_files=max_files) for r in self.roots}

    @classmethod
    def open(cls, sources: str | Path | Sequence[str | Path], *, verb: str = "serve") -> Sources:
        """The roots for user-given paths (directories or ``.safetensors`` files; duplicates dropped).

        Raises:
            InputError: A path does not exist, or is a file that is not ``.safetensors``.
        """
        items = [sources] if isinstance(sources, (str, Path)) else list(sources)
        given: list[tuple[Path, Path | None]] = []
        for item in items:
            src = Path(item).expanduser()
            if not src.exists():
                raise InputError(
                    f"nothing to {verb} at {src}: give a run directory or an explanation .safetensors file"
                )
            if src.is_file():
                if src.suffix != EXPLANATION_SUFFIX:
                    raise InputError(f"{src} is not an explanation file (.safetensors written by Explanation.save)")
                pair: tuple[Path, Path | None] = (src.resolve().parent, src.resolve())
            else:
                pair = (src.resolve(), None)
            if pair not in given:
                given.append(pair)
        if len(given) == 1:
            return cls([Root("", given[0][0], given[0][1])])
        labels = root_labels([only if only is not None else path for path, only in given])
        return cls([Root(lab, path, only) for lab, (path, only) in zip(labels, given, strict=True)])

    @property
    def single(self) -> bool:
        """Whether there is one root (then no root labels are shown)."""
        return len(self.roots) == 1

    def describe(self) -> str:
        """The roots for a terminal message (absolute paths: for the user, never sent to a client)."""
        if self.single:
            r = self.roots[0]
            return str(r.only or r.path)
        return ", ".join(f"{r.label} ({r.only or r.path})" for r in self.roots)

    def public_name(self, root: Root, path: Path) -> str:
        """The client-side name of ``path`` (lying under ``root``)."""
        rel = relative_name(root.path, path)
        return f"{root.label}/{rel}" if root.label else rel

    def entries(self) -> list[Entry]:
        """The catalogue entries of every root, file names labelled."""
        out: list[Entry] = []
        for r in self.roots:
            for e in self.catalogs[r.label].entries():
                out.append(replace(e, file=f"{r.label}/{e.file}", root=r.label) if r.label else e)
        return out

    def unreadable(self) -> dict[str, str]:
        """Files the last `entries` call found under the roots but could not read (public name -> reason)."""
        out: dict[str, str] = {}
        for r in self.roots:
            for name, why in self.catalogs[r.label].unreadable().items():
                out[f"{r.label}/{name}" if r.label else name] = why
        return out

    def groups(self) -> list[dict[str, Any]]:
        """The pairs of all roots together (see `group_entries`)."""
        return group_entries(self.entries())

    def resolve(self, name: str) -> tuple[Root, Path]:
        """The root and resolved file a client-supplied ``name`` denotes.

        Raises:
            Forbidden: The name is absolute, climbs with ``..`` or leads out of its root (links included).

            NotFound: Unknown label, or nothing servable there (including files other than a single-file root's).
        """
        if self.single:
            root, rest = self.roots[0], name
        else:
            check_name(name)
            label, _, rest = name.partition("/")
            found = self.by_label.get(label)
            if found is None or not rest:
                raise NotFound(name)
            root = found
        path = resolve_under(root.path, rest)
        if root.only is not None and path != root.only:
            raise NotFound(name)
        return root, path

    def scrub(self, message: str) -> str:
        """``message`` with every root's absolute path replaced by ``.`` (one root) or its label."""
        for r in sorted(self.roots, key=lambda r: len(str(r.path)), reverse=True):
            message = message.replace(str(r.path), r.label or ".")
        return message

    def load(self, root: Root, path: Path) -> dict[str, Any]:
        """The payload of ``path`` (already resolved under ``root``), its ``file`` the public name."""
        data = load_payload(root.path, path)
        data["file"] = self.public_name(root, path)
        return data

    def load_entry(self, entry: Entry) -> dict[str, Any]:
        """The payload of a catalogue entry (listed by `entries`, so already checked to lie under its root)."""
        root = self.by_label[entry.root]
        rel = entry.file[len(root.label) + 1 :] if root.label else entry.file
        data = load_payload(root.path, root.path / rel)
        data["file"] = entry.file
        return data


# ------------------------------------------------------------------------------------------------ payloads
def _round(x: Any) -> Any:
    """Nested lists of floats rounded to 6 significant digits (non-finite -> None)."""
    a = np.asarray(x, dtype=np.float64)
    flat = [float(f"{v:.6g}") if np.isfinite(v) else None for v in a.reshape(-1).tolist()]
    if a.ndim == 0:
        return flat[0]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if np.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def image_data_url(image: Any) -> str | None:
    """The model-input image ``(H, W, 3)`` uint8 as a ``data:image/png;base64,...`` URL (None if absent)."""
    if image is None:
        return None
    from PIL import Image

    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def caveats(ex: Explanation) -> list[str]:
    """Plain-words warnings about an explanation's numbers that the page shows above its statistics.

    Today one: a sampled surrogate (FIxLIP, FIxLIP (SI)) whose budget gave a side fewer coalitions than
    its terms (``diagnostics["underdetermined"]``), so its standard errors understate the spread over
    seeds; the text names the budget and the budget that would suffice (``budget_needed``).
    """
    d = ex.diagnostics
    out = []
    if float(d.get("underdetermined", 0.0)) >= 1.0:
        budget = ex.params.get("budget")
        need = float(d.get("budget_needed", float("nan")))
        what = f"budget {budget:,}" if isinstance(budget, int) else "this budget"
        fix = f"; budget {int(need):,} would suffice" if np.isfinite(need) else ""
        out.append(
            f"{what} gives fewer sampled coalitions than terms on one side: the fit is underdetermined and its "
            f"standard errors understate the spread over seeds{fix}"
        )
    return out


def explanation_payload(ex: Explanation, file: str) -> dict[str, Any]:
    """What the page needs of one explanation, JSON-ready.

    Keys: ``file, method, model, text, words, special, offsets, grid, image_size, transform, score, cosine,
    units, params, completeness, decomposition, cross (S×P or null), text_main, image_main, stderr
    ({term: standard errors, null where infinite}, for sampled methods), caveats (`caveats`), image
    (data URL or null), image_tokens, image_text, image_offsets``.
    """
    tf = ex.image_transform
    return {
        "file": file,
        "method": ex.method,
        "model": ex.model,
        "text": ex.text,
        "words": ex.words(),
        "special": [bool(v) for v in ex.special.tolist()],
        "offsets": [list(o) if o is not None else None for o in ex.token_offsets],
        "grid": list(ex.grid),
        "image_size": list(ex.image_size) if ex.image_size is not None else None,
        "transform": tf.to_dict() if tf is not None else None,
        "score": _finite(float(ex.score)),
        "cosine": _finite(float(ex.cosine)),
        "units": ex.units,
        "params": _finite(json.loads(json.dumps(ex.params, default=str))),
        "completeness": _finite(ex.completeness()),
        "decomposition": _finite(ex.decomposition()),
        "stderr": {k: _round(v) for k, v in ex.stderr.items() if k in ("cross", "text_main", "image_main")},
        "caveats": caveats(ex),
        "cross": _round(ex.cross) if ex.cross is not None else None,
        "text_main": _round(ex.text_main) if ex.text_main is not None else None,
        "image_main": _round(ex.image_main) if ex.image_main is not None else None,
        "image": image_data_url(ex.image),
        "image_tokens": ex.image_tokens,
        "image_text": ex.image_text,
        "image_offsets": [list(o) if o is not None else None for o in ex.image_offsets] if ex.image_offsets else None,
    }


def load_payload(root: Path, path: Path) -> dict[str, Any]:
    """Load ``path`` (already checked to lie under ``root``) and build its payload.

    Raises:
        InputError: The file is not a dualex explanation.
    """
    ex = Explanation.load(path)
    if ex.cross is None and ex.image_main is None and ex.text_main is None:
        raise InputError(f"{path.name} has neither interactions nor main effects to show")
    return explanation_payload(ex, relative_name(root, path))
