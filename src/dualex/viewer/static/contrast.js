// dualex viewer, contrast page: a saved Contrast side by side (difference map, A, B), drawn from
// /api/contrast. Vanilla JS, no dependencies, no network beyond the serving origin.
"use strict";
(() => {
  const RDBU_R = [
    [5, 48, 97], [32, 101, 171], [67, 147, 195], [144, 196, 221], [209, 229, 240], [247, 246, 246],
    [253, 219, 199], [243, 164, 129], [214, 96, 77], [177, 24, 43], [103, 0, 31],
  ];
  const ALPHA = 0.7;
  const $ = (id) => document.getElementById(id);

  function colour(v, vmax) {
    let t = vmax > 0 ? (v / vmax + 1) / 2 : 0.5;
    t = Math.min(1, Math.max(0, t)) * (RDBU_R.length - 1);
    const i = Math.min(RDBU_R.length - 2, Math.floor(t));
    const f = t - i;
    return [0, 1, 2].map((k) => Math.round(RDBU_R[i][k] + f * (RDBU_R[i + 1][k] - RDBU_R[i][k])));
  }
  const limit = (values) => {
    let m = 0;
    for (const v of values) if (v !== null && Math.abs(v) > m) m = Math.abs(v);
    return m > 0 && Number.isFinite(m) ? m : 1e-12;
  };
  const fmt = (v, d = 4) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));

  // Σ over every caption row of cross (first-order explanations: image_main), as the Python side does.
  function allRows(ex) {
    const P = ex.grid[0] * ex.grid[1];
    if (!ex.cross) return ex.image_main || new Array(P).fill(0);
    const out = new Array(P).fill(0);
    for (const row of ex.cross) for (let p = 0; p < P; p++) out[p] += row[p] || 0;
    return out;
  }
  function textScores(ex) {
    if (!ex.cross) return (ex.text_main || []).map((v, i) => (ex.special[i] ? 0 : v));
    return ex.cross.map((row, i) => (ex.special[i] ? 0 : row.reduce((a, v) => a + (v || 0), 0)));
  }

  function loadImage(url) {
    return new Promise((resolve) => {
      if (!url) return resolve(null);
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => resolve(null);
      img.src = url;
    });
  }

  function draw(suffix, image, grid, map, vmax) {
    const base = $(`image-${suffix}`).getContext("2d");
    const c = $(`overlay-${suffix}`);
    const g = c.getContext("2d");
    base.clearRect(0, 0, c.width, c.height);
    if (image) base.drawImage(image, 0, 0, c.width, c.height);
    else { base.fillStyle = "#f0f0f0"; base.fillRect(0, 0, c.width, c.height); }
    const [rows, cols] = grid;
    const small = document.createElement("canvas");
    small.width = cols;
    small.height = rows;
    const sg = small.getContext("2d");
    const data = sg.createImageData(cols, rows);
    for (let k = 0; k < rows * cols; k++) {
      const v = map[k] || 0;
      const [r, gg, b] = colour(v, vmax);
      const a = image ? ALPHA * Math.pow(Math.min(1, Math.abs(v) / vmax), 0.75) : 1;
      data.data.set([r, gg, b, Math.round(255 * a)], 4 * k);
    }
    sg.putImageData(data, 0, 0);
    g.clearRect(0, 0, c.width, c.height);
    g.imageSmoothingEnabled = true;  // bilinear upsampling of the patch grid
    g.drawImage(small, 0, 0, c.width, c.height);
  }

  function words(el, ex, values, vmax) {
    el.textContent = "";
    ex.words.forEach((w, i) => {
      if (ex.special[i]) return;
      const span = document.createElement("span");
      span.className = "tok gap";
      span.textContent = w;
      const v = values ? values[i] : null;
      if (v !== null && v !== undefined) {
        const [r, g, b] = colour(v, vmax);
        span.style.background = `rgb(${r}, ${g}, ${b})`;
        if ((r + g + b) / 3 < 115) span.style.color = "#fff";
        span.title = fmt(v, 5);
      }
      el.appendChild(span);
    });
  }

  function legend(el, vmax, what) {
    el.innerHTML = "";
    el.append(`−${fmt(vmax, 4)} `);
    const bar = document.createElement("span");
    bar.className = "bar";
    el.append(bar, ` +${fmt(vmax, 4)}  ${what}`);
  }

  async function show(name) {
    const res = await fetch(`/api/contrast?name=${encodeURIComponent(name)}`);
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    const [la, lb] = data.labels;
    const [sa, sb] = data.similarities;
    const a = data.a;
    const b = data.b;
    const imgA = await loadImage(a.image);
    const imgB = await loadImage(b.image);
    const mapA = allRows(a);
    const mapB = allRows(b);
    const vab = Math.max(limit(mapA), limit(mapB));
    const ta = textScores(a);
    const tb = textScores(b);
    const vt = Math.max(limit(ta), limit(tb));
    $("title-a").textContent = `A: ${la}   s ${fmt(sa)}`;
    $("title-b").textContent = `B: ${lb}   s ${fmt(sb)}`;
    draw("a", imgA, a.grid, mapA, vab);
    draw("b", imgB, b.grid, mapB, vab);
    words($("words-a"), a, ta, vt);
    words($("words-b"), b, tb, vt);
    legend($("legend-a"), vab, "image map (Σ over A's rows); caption over the whole image");
    legend($("legend-b"), vab, "same scale as A");
    $("title-d").textContent = `A − B   Δ ${fmt(data.difference)} (${data.units}, ${data.method})`;
    if (data.x_side === "image") {
      const vd = limit(data.difference_map);
      draw("d", imgA, a.grid, data.difference_map, vd);
      $("words-d").textContent = "";
      legend($("legend-d"), vd, "difference map");
    } else {  // x is a caption: the difference lives on its tokens
      const vd = limit(data.difference_scores);
      draw("d", null, a.grid, new Array(a.grid[0] * a.grid[1]).fill(0), 1);
      words($("words-d"), a, data.difference_scores, vd);
      legend($("legend-d"), vd, "per-token difference");
    }
    const dl = $("stats");
    dl.textContent = "";
    for (const [k, v] of Object.entries(data.decomposition)) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = fmt(v, 5);
      dl.append(dt, dd);
    }
    $("status").textContent = `${name}: decomposition adds up to the difference (residual ${fmt(data.decomposition.residual, 8)})`;
  }

  async function start() {
    const sel = $("contrast");
    try {
      const res = await fetch("/api/contrasts");
      const { contrasts } = await res.json();
      if (!contrasts.length) {
        $("status").textContent = "no saved contrasts here (write one with `dualex contrast ... --out DIR`)";
        return;
      }
      for (const c of contrasts) {
        const o = document.createElement("option");
        o.value = c.name;
        o.textContent = `${c.title}  (${c.name})`;
        sel.appendChild(o);
      }
      sel.addEventListener("change", () => show(sel.value).catch(fail));
      await show(contrasts[0].name);
    } catch (e) {
      fail(e);
    }
  }
  function fail(e) {
    const s = $("status");
    s.textContent = String(e.message || e);
    s.className = "error";
  }
  start();
})();
