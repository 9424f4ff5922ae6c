// dualex viewer: caption words -> image map, image box -> caption colours, computed from the cross matrix.
// Vanilla JS, no dependencies, no network beyond the serving origin (none at all in an HTML export).
"use strict";
(() => {
  // RdBu reversed (ColorBrewer anchors, as matplotlib's "RdBu_r"): blue negative, white zero, red positive.
  const RDBU_R = [
    [5, 48, 97], [32, 101, 171], [67, 147, 195], [144, 196, 221], [209, 229, 240], [247, 246, 246],
    [253, 219, 199], [243, 164, 129], [214, 96, 77], [177, 24, 43], [103, 0, 31],
  ];
  const STAGE_PX = 448;
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------------------------------ maths
  function colour(v, vmax) {
    let t = vmax > 0 ? (v / vmax + 1) / 2 : 0.5;
    t = Math.min(1, Math.max(0, t)) * (RDBU_R.length - 1);
    const i = Math.min(RDBU_R.length - 2, Math.floor(t));
    const f = t - i;
    const a = RDBU_R[i];
    const b = RDBU_R[i + 1];
    return [0, 1, 2].map((k) => Math.round(a[k] + f * (b[k] - a[k])));
  }

  function symmetricLimit(values) {
    let m = 0;
    for (const v of values) if (v !== null && Math.abs(v) > m) m = Math.abs(v);
    return m > 0 && Number.isFinite(m) ? m : 1e-12;
  }

  const sum = (values) => values.reduce((a, v) => a + (v || 0), 0);
  const nPatches = (ex) => ex.grid[0] * ex.grid[1];
  const textText = (ex) => Array.isArray(ex.image_tokens);
  const players = (ex) => ex.special.map((s, i) => (s ? -1 : i)).filter((i) => i >= 0);

  function inputSize(ex) {
    if (ex.image_size) return ex.image_size;
    if (ex.transform) return ex.transform.input_size;
    return ex.grid;
  }

  // Image map of a set of caption positions (all players when empty): sum of cross rows, length P.
  function imageMap(ex, tokens) {
    const P = nPatches(ex);
    if (!ex.cross) return ex.image_main ? ex.image_main.map((v) => v || 0) : new Array(P).fill(0);
    const rows = tokens.size ? [...tokens] : players(ex);
    const out = new Array(P).fill(0);
    for (const s of rows) {
      const r = ex.cross[s];
      for (let p = 0; p < P; p++) out[p] += r[p] || 0;
    }
    return out;
  }

  // Standard-error bound of imageMap: Σ of the rows' errors (the SD of a sum is at most the sum of the SDs),
  // exact for one token; Infinity where a term's error is unknown (stored as null); null without errors.
  function imageMapError(ex, tokens) {
    const se = ex.stderr || {};
    const P = nPatches(ex);
    const val = (v) => (v === null || v === undefined ? Infinity : v);
    if (!ex.cross) return se.image_main ? se.image_main.map(val) : null;
    if (!se.cross) return null;
    const rows = tokens.size ? [...tokens] : players(ex);
    const out = new Array(P).fill(0);
    for (const s of rows) for (let p = 0; p < P; p++) out[p] += val(se.cross[s][p]);
    return out;
  }

  function textScoresError(ex, patches) {
    const se = ex.stderr || {};
    const val = (v) => (v === null || v === undefined ? Infinity : v);
    if (!ex.cross) return se.text_main ? se.text_main.map((v, i) => (ex.special[i] ? 0 : val(v))) : null;
    if (!se.cross) return null;
    const cols = patches || [...Array(nPatches(ex)).keys()];
    return se.cross.map((row, i) => {
      if (ex.special[i]) return 0;
      let t = 0;
      for (const p of cols) t += val(row[p]);
      return t;
    });
  }

  // Which values' 95 % intervals cover 0 (null without errors).
  const Z95 = 1.959964;
  const covers = (values, errors) => (errors ? values.map((v, i) => Math.abs(v) <= Z95 * errors[i]) : null);

  // Caption scores over a set of patches (all when null): sum of cross columns, specials 0, length S.
  function textScores(ex, patches) {
    if (!ex.cross) return ex.words.map((_, i) => (ex.special[i] || !ex.text_main ? 0 : ex.text_main[i] || 0));
    const cols = patches || [...Array(nPatches(ex)).keys()];
    return ex.cross.map((row, i) => {
      if (ex.special[i]) return 0;
      let t = 0;
      for (const p of cols) t += row[p] || 0;
      return t;
    });
  }

  // Patches a box (model-input pixels) covers: at least half of a patch's area, else the best-covered
  // ones (the rule of dualex.spans.box_patch_mask).
  function boxPatches(ex, box) {
    const [rows, cols] = ex.grid;
    const [H, W] = inputSize(ex);
    const ph = H / rows;
    const pw = W / cols;
    const [x0, y0, x1, y1] = box;
    const weights = [];
    for (let r = 0; r < rows; r++) {
      const oy = Math.max(0, Math.min((r + 1) * ph, y1) - Math.max(r * ph, y0)) / ph;
      for (let c = 0; c < cols; c++) {
        const ox = Math.max(0, Math.min((c + 1) * pw, x1) - Math.max(c * pw, x0)) / pw;
        weights.push(oy * ox);
      }
    }
    const covered = [];
    weights.forEach((w, p) => { if (w >= 0.5) covered.push(p); });
    if (covered.length) return covered;
    const best = Math.max(...weights);
    if (best <= 0) return [];
    weights.forEach((w, p) => { if (w === best) covered.push(p); });
    return covered;
  }

  function toOriginal(ex, box) {
    const t = ex.transform;
    if (!t) return null;
    const [x0, y0, x1, y1] = box;
    return [(x0 + t.left) / t.scale_x, (y0 + t.top) / t.scale_y, (x1 + t.left) / t.scale_x, (y1 + t.top) / t.scale_y];
  }

  function fmt(v, digits = 4) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e-3 && a < 1e5 ? Number(v.toPrecision(digits)).toString() : v.toExponential(digits - 1);
  }

  // ------------------------------------------------------------------------------------------ data
  function embedded() {
    const el = $("dualex-data");
    return el ? JSON.parse(el.textContent) : null;
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }

  const EMBEDDED = embedded();
  const source = EMBEDDED
    ? {
      pairs: async () => EMBEDDED.pairs,
      explanation: async (file) => {
        const d = EMBEDDED.explanations[file];
        if (!d) throw new Error(`${file} is not in this export`);
        return d;
      },
    }
    : {
      pairs: async () => (await getJSON("/api/pairs")).pairs,
      explanation: async (file) => getJSON("/api/explanation?file=" + encodeURIComponent(file)),
    };

  // ------------------------------------------------------------------------------------------ state
  const state = {
    pairs: [],
    pair: null,
    file: null,
    ex: null,
    tokens: new Set(), // selected caption positions (empty: whole caption)
    box: null, // [x0, y0, x1, y1] in model-input pixels (null: whole image)
    second: new Set(), // text-text: selected positions of the second sentence (empty: all)
    alpha: 0.7,
    image: null, // decoded HTMLImageElement of ex.image
    ex2: null, // compare mode: a second explanation of the same pair, drawn with the same colour scale
    file2: null,
    image2: null,
  };

  function selectedPatches() {
    const ex = state.ex;
    if (textText(ex)) return state.second.size ? [...state.second] : null;
    return state.box ? boxPatches(ex, state.box) : null;
  }

  // ------------------------------------------------------------------------------------------ words
  function units(ex, values, vmax, { second = false, selected = new Set(), uncertain = null, errors = null } = {}) {
    const words = second ? ex.image_tokens : ex.words;
    const offsets = (second ? ex.image_offsets : ex.offsets) || [];
    const text = second ? ex.image_text || "" : ex.text;
    const out = [];
    let prevEnd = null;
    words.forEach((w, i) => {
      const special = !second && ex.special[i];
      if (special) return; // specials are not players; they are not shown
      const off = offsets[i];
      const shown = off ? text.slice(off[0], off[1]) : w;
      const gap = out.length > 0 && (!off || prevEnd === null || off[0] > prevEnd);
      if (off) prevEnd = off[1];
      out.push({
        i, text: shown || w, value: values ? values[i] : null, gap, vmax, sel: selected.has(i),
        uncertain: !!(uncertain && uncertain[i]), error: errors ? errors[i] : null,
      });
    });
    return out;
  }

  function renderWords(container, list, { interactive }) {
    container.replaceChildren();
    for (const u of list) {
      const el = document.createElement("span");
      el.className = "tok" + (u.gap ? " gap" : "") + (u.sel ? " sel" : "") + (u.uncertain ? " uncertain" : "");
      el.textContent = u.text;
      el.dataset.i = String(u.i);
      if (interactive) {
        el.tabIndex = 0;
        el.setAttribute("role", "checkbox");
        el.setAttribute("aria-checked", u.sel ? "true" : "false");
      }
      if (u.value !== null && u.value !== undefined) {
        const [r, g, b] = colour(u.value, u.vmax);
        el.style.backgroundColor = `rgb(${r}, ${g}, ${b})`;
        el.style.color = (r + g + b) / 3 < 115 ? "#fff" : "#000";
        el.title = `${u.text}: ${fmt(u.value)}` + (u.error !== null ? ` ± ${fmt(Z95 * u.error, 3)} (95 %)` : "");
        el.dataset.value = String(u.value);
      }
      container.appendChild(el);
    }
  }

  // Click a word to select it (again to clear), shift/ctrl/cmd-click to add, drag across words for a range.
  function makeSelectable(container, getSet, setSet, allowed) {
    let anchor = null;
    let base = null;
    container.addEventListener("mousedown", (e) => {
      const t = e.target.closest(".tok");
      if (!t || !allowed()) return;
      e.preventDefault();
      const i = Number(t.dataset.i);
      const cur = getSet();
      const add = e.shiftKey || e.ctrlKey || e.metaKey;
      base = add ? new Set(cur) : new Set();
      let next;
      if (add) {
        next = new Set(cur);
        if (next.has(i)) next.delete(i); else next.add(i);
      } else {
        next = cur.size === 1 && cur.has(i) ? new Set() : new Set([i]);
      }
      anchor = i;
      setSet(next);
    });
    container.addEventListener("mousemove", (e) => {
      if (anchor === null || !(e.buttons & 1)) return;
      const t = e.target.closest(".tok");
      if (!t) return;
      const i = Number(t.dataset.i);
      const lo = Math.min(anchor, i);
      const hi = Math.max(anchor, i);
      const next = new Set(base);
      for (const el of container.querySelectorAll(".tok")) {
        const k = Number(el.dataset.i);
        if (k >= lo && k <= hi) next.add(k);
      }
      const cur = getSet();
      if (next.size !== cur.size || [...next].some((k) => !cur.has(k))) setSet(next);
    });
    window.addEventListener("mouseup", () => { anchor = null; });
    container.addEventListener("keydown", (e) => {
      const t = e.target.closest(".tok");
      if (!t || !allowed() || (e.key !== "Enter" && e.key !== " ")) return;
      e.preventDefault();
      const i = Number(t.dataset.i);
      const next = new Set(getSet());
      if (next.has(i)) next.delete(i); else next.add(i);
      setSet(next);
      const again = container.querySelector(`.tok[data-i="${i}"]`);
      if (again) again.focus();
    });
  }

  // ------------------------------------------------------------------------------------------ drawing
  function setupStage(ex) {
    const [H, W] = inputSize(ex);
    const k = Math.max(1, Math.round(STAGE_PX / Math.max(H, W)));
    for (const id of ["image", "overlay", "boxlayer"]) {
      const c = $(id);
      c.width = Math.round(W * k);
      c.height = Math.round(H * k);
    }
    $("stage").style.aspectRatio = `${W} / ${H}`;
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the stored image could not be decoded"));
      img.src = url;
    });
  }

  function drawBase(canvasId = "image", image = state.image) {
    const c = $(canvasId);
    const g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    if (!image) {
      g.fillStyle = "#f0f0f0";
      g.fillRect(0, 0, c.width, c.height);
      return;
    }
    g.imageSmoothingEnabled = c.width / image.naturalWidth <= 2;
    g.drawImage(image, 0, 0, c.width, c.height);
  }

  // Bilinear upsampling with patch values at patch centres (as torch's align_corners=False).
  // Patches whose interval covers 0 (``uncertain``, may be null) are hatched.
  function drawOverlay(map, vmax, { canvasId = "overlay", ex = state.ex, image = state.image, uncertain = null } = {}) {
    const c = $(canvasId);
    const g = c.getContext("2d");
    const [rows, cols] = ex.grid;
    const w = c.width;
    const h = c.height;
    const img = g.createImageData(w, h);
    const px = img.data;
    const opaque = !image;
    const axis = (n, cells) => {
      const out = [];
      for (let k = 0; k < n; k++) {
        const gc = Math.min(cells - 1, Math.max(0, ((k + 0.5) / n) * cells - 0.5));
        const lo = Math.floor(gc);
        out.push([lo, Math.min(lo + 1, cells - 1), gc - lo]);
      }
      return out;
    };
    const ys = axis(h, rows);
    const xs = axis(w, cols);
    for (let y = 0; y < h; y++) {
      const [y0, y1, fy] = ys[y];
      for (let x = 0; x < w; x++) {
        const [x0, x1, fx] = xs[x];
        const top = map[y0 * cols + x0] * (1 - fx) + map[y0 * cols + x1] * fx;
        const bot = map[y1 * cols + x0] * (1 - fx) + map[y1 * cols + x1] * fx;
        const v = top * (1 - fy) + bot * fy;
        const [r, gg, b] = colour(v, vmax);
        const a = opaque ? 1 : state.alpha * Math.pow(Math.min(1, Math.abs(v) / vmax), 0.75);
        const o = 4 * (y * w + x);
        px[o] = r;
        px[o + 1] = gg;
        px[o + 2] = b;
        px[o + 3] = Math.round(255 * a);
      }
    }
    g.putImageData(img, 0, 0);
    if (!uncertain) return;
    const cw = w / cols;
    const chh = h / rows;
    g.save();
    g.strokeStyle = "rgba(0, 0, 0, 0.55)";
    g.lineWidth = 1;
    uncertain.forEach((u, p) => {
      if (!u) return;
      const x0 = (p % cols) * cw;
      const y0 = Math.floor(p / cols) * chh;
      g.beginPath();
      g.rect(x0, y0, cw, chh);
      g.clip();
      g.beginPath();
      for (let d = -chh; d < cw; d += 6) {
        g.moveTo(x0 + d, y0 + chh);
        g.lineTo(x0 + d + chh, y0);
      }
      g.stroke();
      g.restore();
      g.save();
      g.strokeStyle = "rgba(0, 0, 0, 0.55)";
      g.lineWidth = 1;
    });
    g.restore();
  }

  function drawBoxLayer(rubber) {
    const ex = state.ex;
    const c = $("boxlayer");
    const g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    if (!ex || textText(ex)) return;
    const [H, W] = inputSize(ex);
    const sx = c.width / W;
    const sy = c.height / H;
    const box = rubber || state.box;
    if (!box) return;
    if (!rubber) {
      const [rows, cols] = ex.grid;
      const ph = H / rows;
      const pw = W / cols;
      g.strokeStyle = "rgba(0, 0, 0, 0.45)";
      g.lineWidth = 1;
      for (const p of boxPatches(ex, box)) {
        const r = Math.floor(p / cols);
        const cc = p % cols;
        g.strokeRect(cc * pw * sx + 0.5, r * ph * sy + 0.5, pw * sx - 1, ph * sy - 1);
      }
    }
    const [x0, y0, x1, y1] = box;
    for (const [lw, col] of [[4, "#fff"], [2, "#000"]]) {
      g.lineWidth = lw;
      g.strokeStyle = col;
      g.setLineDash(rubber ? [6, 4] : []);
      g.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
    }
    g.setLineDash([]);
  }

  function legend(el, vmax, what) {
    el.replaceChildren();
    el.append(`${what}:  −${fmt(vmax, 3)}`);
    const bar = document.createElement("span");
    bar.className = "bar";
    el.append(bar, `+${fmt(vmax, 3)}`);
  }

  function spanLabel(ex) {
    if (!state.tokens.size) return "whole caption";
    return "“" + [...state.tokens].sort((a, b) => a - b).map((i) => ex.words[i]).join(" ") + "”";
  }

  function regionLabel(ex) {
    if (textText(ex)) {
      if (!state.second.size) return "whole sentence";
      return "“" + [...state.second].sort((a, b) => a - b).map((i) => ex.image_tokens[i]).join(" ") + "”";
    }
    if (!state.box) return "whole image";
    const o = toOriginal(ex, state.box);
    const b = o || state.box;
    return `box ${b.map((v) => Math.round(v)).join(",")}` + (o ? " (original pixels)" : " (input pixels)");
  }

  // The second explanation (compare mode) is shown only when it has the same tokens and grid.
  const twinActive = () => !!(state.ex2 && sameShape(state.ex, state.ex2));

  function render() {
    const ex = state.ex;
    if (!ex) return;
    const interactive = !!ex.cross;
    const twin = twinActive() ? state.ex2 : null;
    const shared = twin ? " (scale shared with the second explanation)" : "";
    // image side: one colour scale for both explanations when comparing
    const map = imageMap(ex, state.tokens);
    const mapUnc = covers(map, imageMapError(ex, state.tokens));
    const map2 = twin ? imageMap(twin, state.tokens) : null;
    const mapMax = symmetricLimit(twin ? [...map, ...map2] : map);
    if (textText(ex)) {
      renderWords($("second"), units(ex, map, mapMax, { second: true, selected: state.second, uncertain: mapUnc }),
        { interactive });
    } else {
      drawOverlay(map, mapMax, { uncertain: mapUnc });
      drawBoxLayer(null);
    }
    legend($("image-legend"), mapMax,
      `${textText(ex) ? "sentence" : "image"} map of ${spanLabel(ex)}, Σ ${fmt(sum(map))}${shared}`);
    // caption side
    const patches = selectedPatches();
    const scores = textScores(ex, patches);
    const scoreErr = textScoresError(ex, patches);
    const scores2 = twin ? textScores(twin, patches) : null;
    const pick = (v) => v.filter((_, i) => !ex.special[i]);
    const scoreMax = symmetricLimit(twin ? [...pick(scores), ...pick(scores2)] : pick(scores));
    renderWords($("caption"), units(ex, scores, scoreMax, {
      selected: state.tokens, uncertain: covers(scores, scoreErr), errors: scoreErr,
    }), { interactive });
    legend($("caption-legend"), scoreMax, `caption over ${regionLabel(ex)}, Σ ${fmt(sum(scores))}${shared}`);
    renderStats(ex, map, scores);
    renderTwin(twin, map2, mapMax, scores2, scoreMax);
  }

  function renderTwin(twin, map2, mapMax, scores2, scoreMax) {
    const box = $("twin");
    box.hidden = !state.ex2;
    if (!state.ex2) return;
    const ex2 = state.ex2;
    $("twin-title").textContent = `${ex2.method} · ${ex2.model || "?"} — ${state.file2}`;
    if (!twin) {
      $("caption2").replaceChildren();
      $("second2").hidden = true;
      $("stage2").hidden = true;
      $("twin-legend").textContent = "not comparable: the two explanations have different tokens or grids";
      return;
    }
    const tt = textText(twin);
    $("stage2").hidden = tt;
    $("second2").hidden = !tt;
    const mapUnc = covers(map2, imageMapError(twin, state.tokens));
    if (tt) {
      renderWords($("second2"), units(twin, map2, mapMax, { second: true, selected: state.second, uncertain: mapUnc }),
        { interactive: false });
    } else {
      drawBase("image2", state.image2);
      drawOverlay(map2, mapMax, { canvasId: "overlay2", ex: twin, image: state.image2, uncertain: mapUnc });
    }
    const err2 = textScoresError(twin, selectedPatches());
    renderWords($("caption2"), units(twin, scores2, scoreMax, {
      selected: state.tokens, uncertain: covers(scores2, err2), errors: err2,
    }), { interactive: false });
    $("twin-legend").textContent = `same colour scale as the first: map Σ ${fmt(sum(map2))}, caption Σ `
      + `${fmt(sum(scores2))}; score ${fmt(twin.score)} (${twin.units} units), cosine ${fmt(twin.cosine)}`;
  }

  function renderStats(ex, map, scores) {
    const dl = $("stats");
    dl.replaceChildren();
    const c = ex.completeness || {};
    const rows = [
      ["model", ex.model || "–"],
      ["method", ex.method],
      ["file", ex.file],
      ["score", `${fmt(ex.score)} (${ex.units} units)`],
      ["cosine", fmt(ex.cosine)],
      ["attributed", fmt(c.attributed)],
    ];
    if (c.target !== undefined) {
      rows.push(["target", fmt(c.target)]);
      rows.push(["completeness error", `${fmt(c.error, 3)} (${fmt(100 * (c.relative_error || 0), 3)} % of target)`]);
    }
    if (c.baseline) rows.push(["baseline", fmt(c.baseline)]);
    for (const [k, v] of Object.entries(c)) {
      if (!["attributed", "target", "error", "relative_error", "score", "baseline"].includes(k)) rows.push([k, fmt(v)]);
    }
    const d = ex.decomposition || {};
    if (Object.keys(d).length) {
      const parts = Object.entries(d).filter(([k]) => !["similarity", "residual"].includes(k))
        .map(([k, v], i) => `${k === "method_error" ? "− " : i ? "+ " : ""}${k} ${fmt(v, 3)}`);
      rows.push(["decomposition", `similarity ${fmt(d.similarity)} = ${parts.join(" ")}`]);
    }
    rows.push(["span → image", `${spanLabel(ex)}: Σ ${fmt(sum(map))}`]);
    rows.push(["region → caption", `${regionLabel(ex)}: Σ ${fmt(sum(scores))}`]);
    for (const text of ex.caveats || []) rows.unshift(["caveat", text]);
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dd.dataset.stat = k;
      if (k === "caveat") dd.classList.add("error");
      dl.append(dt, dd);
    }
  }

  function status(text, error = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", error);
  }

  // ------------------------------------------------------------------------------------------ loading
  async function openCompare(file) {
    if (!file) {
      state.ex2 = null;
      state.file2 = null;
      state.image2 = null;
      render();
      document.body.dataset.compared = "";
      return;
    }
    let ex2;
    try {
      ex2 = await source.explanation(file);
    } catch (err) {
      status(`could not load ${file}: ${err.message}`, true);
      return;
    }
    state.ex2 = ex2;
    state.file2 = file;
    state.image2 = ex2.image ? await loadImage(ex2.image).catch(() => null) : null;
    if (!textText(ex2)) {
      const [H, W] = inputSize(ex2);
      const k = Math.max(1, Math.round(STAGE_PX / Math.max(H, W)));
      for (const id of ["image2", "overlay2"]) {
        $(id).width = Math.round(W * k);
        $(id).height = Math.round(H * k);
      }
      $("stage2").style.aspectRatio = `${W} / ${H}`;
    }
    render();
    document.body.dataset.compared = file; // for tests and scripts
  }

  function fillCompare(pair) {
    const sel = $("compare");
    sel.replaceChildren();
    const none = document.createElement("option");
    none.value = "";
    none.textContent = "(none)";
    sel.appendChild(none);
    for (const e of pair.entries) {
      const o = document.createElement("option");
      o.value = e.file;
      o.textContent = `${e.method} · ${e.model || "?"} — ${e.file}`;
      sel.appendChild(o);
    }
    $("compare-pick").hidden = pair.entries.length < 2;
  }

  function sameShape(a, b) {
    return a && b && a.words.length === b.words.length && a.grid[0] === b.grid[0] && a.grid[1] === b.grid[1];
  }

  async function openFile(file) {
    status(`loading ${file} …`);
    let ex;
    try {
      ex = await source.explanation(file);
    } catch (err) {
      status(`could not load ${file}: ${err.message}`, true);
      return;
    }
    if (!sameShape(ex, state.ex)) {
      state.tokens = new Set();
      state.box = null;
      state.second = new Set();
    }
    state.ex = ex;
    state.file = file;
    state.image = ex.image ? await loadImage(ex.image).catch(() => null) : null;
    const tt = textText(ex);
    $("stage").hidden = tt;
    $("second").hidden = !tt;
    $("alpha").parentElement.hidden = tt; // no overlay over a sentence
    $("clear-box").textContent = tt ? "whole sentence" : "whole image";
    $("hint").textContent = !ex.cross
      ? `Method ${ex.method} gives no token × patch interactions; shown are its single-part effects.`
      : tt
        ? "Click or drag over words of either sentence to see how they interact with the other one."
        : "Click or drag over caption words to map them onto the image. Draw a box on the image to colour "
          + "the caption. Red: positive, blue: negative."
          + (ex.stderr && Object.keys(ex.stderr).length ? " Hatched: the 95 % interval of the estimate covers 0." : "");
    if (!tt) {
      setupStage(ex);
      drawBase();
    }
    for (const b of $("methods").querySelectorAll("button")) {
      b.setAttribute("aria-checked", b.dataset.file === file ? "true" : "false");
    }
    render();
    status(`${state.pairs.length} pair(s) · ${file}`);
    document.body.dataset.ready = file; // for tests and scripts: the page shows this file now
  }

  function showPair(index) {
    const pair = state.pairs[index];
    state.pair = pair;
    const box = $("methods");
    box.replaceChildren();
    const models = new Set(pair.entries.map((e) => e.model));
    const shown = (e) => (models.size > 1 ? `${e.method} · ${e.model}` : e.method);
    const names = pair.entries.map(shown);
    for (const e of pair.entries) {
      const b = document.createElement("button");
      b.type = "button";
      b.setAttribute("role", "radio");
      b.dataset.file = e.file;
      b.dataset.method = e.method;
      const name = shown(e);
      // several roots (dualex serve A B): the root's label tells apart what would read the same
      b.textContent = e.root && names.filter((n) => n === name).length > 1 ? `${name} · ${e.root}` : name;
      b.title = e.file;
      b.addEventListener("click", () => openFile(e.file));
      box.appendChild(b);
    }
    state.ex2 = null;
    state.file2 = null;
    fillCompare(pair);
    return openFile(pair.entries[0].file);
  }

  async function start() {
    const alpha = $("alpha");
    alpha.addEventListener("input", () => {
      state.alpha = Number(alpha.value);
      if (state.ex && !textText(state.ex)) render();
    });
    $("clear-span").addEventListener("click", () => { state.tokens = new Set(); render(); });
    $("clear-box").addEventListener("click", () => { state.box = null; state.second = new Set(); render(); });
    const interactive = () => !!(state.ex && state.ex.cross);
    makeSelectable($("caption"), () => state.tokens, (s) => { state.tokens = s; render(); }, interactive);
    makeSelectable($("second"), () => state.second, (s) => { state.second = s; render(); }, interactive);

    const layer = $("boxlayer");
    let drag = null;
    const toInput = (e) => {
      const [H, W] = inputSize(state.ex);
      const r = layer.getBoundingClientRect();
      const x = Math.min(W, Math.max(0, ((e.clientX - r.left) / r.width) * W));
      const y = Math.min(H, Math.max(0, ((e.clientY - r.top) / r.height) * H));
      return [x, y];
    };
    layer.addEventListener("pointerdown", (e) => {
      if (!interactive() || textText(state.ex)) return;
      const [x, y] = toInput(e);
      drag = [x, y, x, y];
      layer.setPointerCapture(e.pointerId);
    });
    layer.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const [x, y] = toInput(e);
      drag[2] = x;
      drag[3] = y;
      drawBoxLayer([Math.min(drag[0], x), Math.min(drag[1], y), Math.max(drag[0], x), Math.max(drag[1], y)]);
    });
    const finish = (e) => {
      if (!drag) return;
      const [x, y] = toInput(e);
      const [ax, ay] = drag;
      drag = null;
      const ex = state.ex;
      const [H, W] = inputSize(ex);
      if (Math.abs(x - ax) < W / ex.grid[1] / 4 && Math.abs(y - ay) < H / ex.grid[0] / 4) {
        // a click: the patch under the pointer
        const pw = W / ex.grid[1];
        const ph = H / ex.grid[0];
        const c0 = Math.min(ex.grid[1] - 1, Math.floor(x / pw));
        const r0 = Math.min(ex.grid[0] - 1, Math.floor(y / ph));
        state.box = [c0 * pw, r0 * ph, (c0 + 1) * pw, (r0 + 1) * ph];
      } else {
        state.box = [Math.min(ax, x), Math.min(ay, y), Math.max(ax, x), Math.max(ay, y)];
      }
      render();
    };
    layer.addEventListener("pointerup", finish);
    layer.addEventListener("pointercancel", () => { drag = null; drawBoxLayer(null); });

    $("pair").addEventListener("change", (e) => showPair(Number(e.target.value)));
    $("compare").addEventListener("change", (e) => openCompare(e.target.value));
    try {
      state.pairs = await source.pairs();
    } catch (err) {
      status(`could not list explanations: ${err.message}`, true);
      return;
    }
    if (!state.pairs.length) {
      status("no explanation files (*.safetensors written by Explanation.save) found", true);
      return;
    }
    const sel = $("pair");
    state.pairs.forEach((p, i) => {
      const o = document.createElement("option");
      o.value = String(i);
      const cap = p.caption.length > 70 ? p.caption.slice(0, 67) + "…" : p.caption;
      o.textContent = `${p.label} — ${cap} (${p.entries.length})`;
      sel.appendChild(o);
    });
    await showPair(0);
  }

  // exposed for scripts and tests: the numbers behind what is drawn
  window.dualexViewer = { state, imageMap, textScores, boxPatches, colour, imageMapError, openCompare };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
