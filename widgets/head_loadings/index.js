// HeadLoadingExplorer (attnviz/widgets/head_loadings.py): SAE features clustered by their
// head-loading vectors (decoder norm per head), beside a shuffled null.
//
// Traits read: k, cluster, feature, dictionary, notes, heads, head_kind, ks, has_model, analysed,
// data, clustering, charts, cluster_info, feature_info, error, busy.
// Traits written: cluster, feature (clicks). Requests: "analyse" (the sweep, on first display),
// "cluster" {k} (the slider). In an exported file clicks still work from the data shown.

import { decodeArray } from "../shared/arrays.js";
import { drawChart } from "../shared/charts.js";
import { el, textEl } from "../shared/controls.js";
import { batched } from "../shared/events.js";
import { densityChart, exampleLines } from "../shared/feature_panel.js";
import { fixed, formatSigned } from "../shared/format.js";
import { createFrame } from "../shared/frame.js";
import { colorize, divergingColorize } from "../shared/heatmap.js";
import { createLegend, createTooltip } from "../shared/panel.js";
import { displayToken } from "../shared/tokens.js";
import { barRows, CHART, HEATMAP_W, LISTED, MAP_PX, STYLE, swatch } from "./parts.js";
import { boundaries, clusterColor, css, decodeState, fitText, heatmapValues, mapPixels, nearestPoint, rankCluster, rowOf, sortedIndexAt } from "./layout.js";

export * from "./layout.js";
export { HEATMAP_W } from "./parts.js";

function render({ model, el: host }) {
  const slider = el("input", "", { type: "range", min: "2", max: "2", step: "1", "data-testid": "k-slider", "aria-label": "k, the number of clusters" });
  const kValue = textEl("b", "", "", { "data-testid": "k-value" });
  const kBox = el("label", "av-check");
  kBox.append(textEl("span", "", "clusters k = "), kValue, slider);
  let state = null;
  const frame = createFrame(model, {
    testid: "head-loadings",
    controls: [kBox],
    hasData: () => state !== null,
    statusText() {
      if (!state) return model.get("error") ? "" : "waiting for the k-means sweep…";
      const heads = model.get("heads") ?? [];
      return `${state.n.toLocaleString("en-US")} features clustered · ${heads.length} ${model.get("head_kind") === "kv" ? "value" : "query"} heads · k = ${state.k}`;
    },
  });
  const { root, body } = frame;
  const style = el("style");
  style.textContent = STYLE;
  root.append(style);
  const tooltip = createTooltip(root);
  if (frame.isStatic) {
    root.insertBefore(textEl("div", "av-note", "Exported view: clicks and hover work here; another k, cluster tokens and heads need the notebook.", { "data-testid": "static-note" }), frame.controls.nextSibling);
  }
  const about = el("div", "av-note", { "data-testid": "about" });
  const summary = el("div", "", { "data-testid": "summary" });
  root.insertBefore(about, body);
  root.insertBefore(summary, body);

  // heatmap: head labels | cluster band, canvas, cluster edges, the selected cluster's outline
  const heads = el("div", "hl-heads", { "data-testid": "head-labels" });
  const band = el("div", "hl-band", { "data-testid": "cluster-band" });
  const canvas = el("canvas", "av-heatmap", { "data-testid": "loadings-heatmap" });
  const edges = el("div");
  const pick = el("div", "hl-pick", { "data-testid": "heatmap-selected" });
  const wrap = el("div", "hl-wrap");
  wrap.append(canvas, edges, pick);
  const plot = el("div");
  plot.append(band, wrap);
  const heat = el("div", "hl-heat");
  heat.append(el("div"), textEl("div", "av-axis-title", "features, sorted by cluster (nearest the centre first) →"), heads, plot);
  const legendBox = el("div");
  const heatBox = el("div", "hl-row");
  const heatCol = el("div");
  heatCol.append(heat, legendBox);
  heatBox.append(heatCol);
  const charts = el("div", "hl-row", { "data-testid": "charts" });
  const mapCanvas = el("canvas", "av-heatmap", { "data-testid": "map", width: String(MAP_PX), height: String(MAP_PX) });
  const mapBox = el("div");
  mapBox.style.width = `${MAP_PX + 2}px`;
  const list = el("div", "hl-list", { "data-testid": "cluster-list" });
  const detail = el("div", "hl-detail", { "data-testid": "detail" });
  const lower = el("div", "hl-row");
  lower.append(mapBox, list, detail);
  body.append(heatBox, charts, lower);
  host.replaceChildren(root);

  let mapPx = null;
  let sizeMarks = [];

  const selected = () => Number(model.get("cluster") ?? -1);
  const chosen = () => Number(model.get("feature") ?? -1);

  function choose(name, value) {
    if (frame.isStatic) model.set(name, value);
    else frame.write({ [name]: value });
  }

  // ---- the heatmap -----------------------------------------------------------------------------
  function drawHeatmap() {
    const labels = model.get("heads") ?? [];
    heads.replaceChildren();
    band.replaceChildren();
    edges.replaceChildren();
    if (!state) {
      canvas.width = 0;
      return;
    }
    const rowPx = Math.max(8, Math.min(20, Math.floor(220 / state.cols)));
    const bins = Math.min(state.n, HEATMAP_W);
    const { values, max } = heatmapValues(state, bins);
    canvas.width = bins;
    canvas.height = state.cols;
    Object.assign(canvas.style, { width: `${HEATMAP_W}px`, height: `${state.cols * rowPx}px`, imageRendering: "pixelated" });
    Object.assign(canvas.dataset, { rows: String(state.cols), cols: String(bins), features: String(state.n), painted: String(performance.now()) });
    const ctx = canvas.getContext("2d");
    if (ctx !== null) ctx.putImageData(new ImageData(colorize(values, state.cols, bins, { vmin: 0, vmax: max || 1 }), bins, state.cols), 0, 0);
    heads.style.lineHeight = `${rowPx}px`;
    heads.style.paddingTop = "14px";
    labels.forEach((label) => heads.append(textEl("div", "", label, { title: label })));
    const cuts = boundaries(state.sizes);
    state.sizes.forEach((size, c) => {
      if (size === 0) return;
      const seg = el("span", "", { "data-testid": `band-${c}`, "data-cluster": String(c), "aria-pressed": String(c === selected()), title: `cluster ${c}: ${size} features` });
      seg.style.left = `${(cuts[c] / state.n) * HEATMAP_W}px`;
      seg.style.width = `${Math.max(1, (size / state.n) * HEATMAP_W)}px`;
      seg.style.background = css(clusterColor(c));
      seg.addEventListener("click", () => choose("cluster", c));
      band.append(seg);
      if (c > 0) {
        const edge = el("div", "hl-edge");
        edge.style.left = `${(cuts[c] / state.n) * HEATMAP_W}px`;
        edges.append(edge);
      }
    });
    legendBox.replaceChildren(createLegend({ title: "share of the feature's decoder norm on the head", lo: "0", hi: fixed(max, 2) }).node);
    markCluster();
  }

  function markCluster() {
    const c = selected();
    for (const seg of band.children) seg.setAttribute("aria-pressed", String(Number(seg.dataset.cluster) === c));
    if (!state || c < 0 || c >= state.k) {
      pick.style.display = "none";
      return;
    }
    const cuts = boundaries(state.sizes);
    Object.assign(pick.style, { display: "block", left: `${(cuts[c] / state.n) * HEATMAP_W}px`, width: `${Math.max(2, (state.sizes[c] / state.n) * HEATMAP_W)}px` });
  }

  function heatCell(event) {
    const rect = canvas.getBoundingClientRect();
    if (!state || rect.width === 0) return null;
    const j = sortedIndexAt((event.clientX - rect.left) / rect.width, state.n);
    const head = Math.max(0, Math.min(state.cols - 1, Math.floor(((event.clientY - rect.top) / rect.height) * state.cols)));
    const row = state.order[j];
    return { j, row, head, feature: state.features[row], cluster: state.labels[row], loading: state.loadings[row * state.cols + head] };
  }
  canvas.addEventListener("mousemove", (event) => {
    const cell = heatCell(event);
    if (!cell) return;
    const label = (model.get("heads") ?? [])[cell.head] ?? `head ${cell.head}`;
    const pooled = state.n > HEATMAP_W ? [`(a pixel is the mean of ~${Math.round(state.n / HEATMAP_W)} features)`] : [];
    tooltip.show([`feature F${cell.feature} · cluster ${cell.cluster}`, `head ${label}`, `loading ${fixed(cell.loading, 3)} of its decoder norm`, ...pooled], event, cell);
  });
  canvas.addEventListener("mouseleave", () => tooltip.hide());
  canvas.addEventListener("click", (event) => {
    const cell = heatCell(event);
    if (cell) choose("cluster", cell.cluster);
  });

  // ---- charts: inertia, silhouette, cluster sizes ------------------------------------------
  function drawCharts() {
    const specs = model.get("charts") ?? {};
    charts.replaceChildren();
    sizeMarks = [];
    for (const name of ["inertia", "silhouette", "sizes"]) {
      if (!specs[name]?.series) continue;
      const chart = drawChart(specs[name], { ...CHART, testid: `chart-${name}` });
      chart.style.width = `${CHART.width}px`; // long legend names wrap instead of widening it
      charts.append(chart);
      if (name !== "sizes") continue;
      // Series 0 is the clusters, in rank order: rank r is cluster r - 1.
      sizeMarks = Array.from(chart.querySelectorAll('g[data-series="0"] [data-testid="chart-point"]'));
      for (const mark of sizeMarks) {
        const c = Number(mark.getAttribute("data-index"));
        mark.setAttribute("data-cluster", String(c));
        mark.setAttribute("data-size", String(state?.sizes[c] ?? ""));
        mark.style.cursor = "pointer";
        mark.addEventListener("click", () => choose("cluster", c));
      }
    }
    markSizes();
  }

  function markSizes() {
    for (const mark of sizeMarks) {
      const on = Number(mark.getAttribute("data-cluster")) === selected();
      mark.setAttribute("stroke", on ? "#1b1b1b" : "#fff");
      mark.setAttribute("stroke-width", on ? "2.5" : "1");
    }
  }

  // ---- the map ---------------------------------------------------------------------------------
  function drawMap() {
    mapBox.replaceChildren();
    const data = model.get("data") ?? {};
    if (!state) return;
    mapPx = mapPixels(state.map, state.n, MAP_PX);
    const ex = data.explained ?? [];
    const axis = (i) => `${data.projection ?? "PCA"} ${i + 1}${ex[i] !== undefined ? ` (${Math.round(100 * ex[i])}% of variance)` : ""}`;
    mapBox.append(textEl("div", "av-panel-title", "features by head loading"), textEl("div", "av-axis-title", `${axis(0)} →, ${axis(1)} ↑; colour: cluster`), mapCanvas);
    paintMap();
  }

  function paintMap() {
    const ctx = mapCanvas.getContext("2d");
    if (ctx === null || !state || !mapPx) return;
    mapCanvas.style.width = `${MAP_PX}px`;
    mapCanvas.style.height = `${MAP_PX}px`;
    ctx.clearRect(0, 0, MAP_PX, MAP_PX);
    const c = selected();
    // the selected cluster last, so it sits on top
    for (const pass of [false, true]) {
      for (let i = 0; i < state.n; i++) {
        const mine = state.labels[i] === c;
        if (mine !== pass) continue;
        ctx.fillStyle = css(clusterColor(state.labels[i]), c < 0 || mine ? 0.85 : 0.15);
        ctx.fillRect(mapPx[2 * i] - 1.5, mapPx[2 * i + 1] - 1.5, 3, 3);
      }
    }
    const row = rowOf(state, chosen());
    if (row >= 0) {
      ctx.strokeStyle = "#1b1b1b";
      ctx.lineWidth = 2;
      ctx.strokeRect(mapPx[2 * row] - 4, mapPx[2 * row + 1] - 4, 8, 8);
    }
    mapCanvas.dataset.painted = String(performance.now());
  }

  const mapPoint = (event) => {
    const rect = mapCanvas.getBoundingClientRect();
    return mapPx ? nearestPoint(mapPx, ((event.clientX - rect.left) * MAP_PX) / rect.width, ((event.clientY - rect.top) * MAP_PX) / rect.height) : -1;
  };
  mapCanvas.addEventListener("mousemove", (event) => {
    const i = mapPoint(event);
    if (i < 0) return tooltip.hide();
    tooltip.show([`feature F${state.features[i]} · cluster ${state.labels[i]}`, "click: its cluster"], event, { feature: state.features[i], cluster: state.labels[i] });
  });
  mapCanvas.addEventListener("mouseleave", () => tooltip.hide());
  mapCanvas.addEventListener("click", (event) => {
    const i = mapPoint(event);
    if (i >= 0) choose("cluster", state.labels[i]);
  });

  // ---- the cluster list ------------------------------------------------------------------------
  function drawList() {
    list.replaceChildren();
    if (!state) return;
    const labels = model.get("heads") ?? [];
    const table = el("table", "av-table", { "data-testid": "clusters-table" });
    const headRow = el("tr");
    for (const [text, left] of [["cluster", true], ["features", false], ["loads most on", true]]) headRow.append(textEl("th", left ? "av-left" : "", text));
    table.append(headRow);
    state.sizes.forEach((size, c) => {
      const profile = state.profiles.subarray(c * state.cols, (c + 1) * state.cols);
      const top = profile.indexOf(Math.max(...profile));
      const tr = el("tr", "", { "data-testid": "cluster-row", "data-cluster": String(c), "data-size": String(size) });
      const button = textEl("button", "", `cluster ${c}`, { type: "button", "data-testid": `cluster-${c}`, "aria-pressed": String(c === selected()) });
      button.prepend(swatch(c));
      button.addEventListener("click", () => choose("cluster", c));
      const name = el("td", "av-left");
      name.append(button);
      tr.append(name, textEl("td", "", String(size), { "data-testid": "cluster-size" }), textEl("td", "av-left", size ? `${labels[top] ?? top} (${Math.round(100 * profile[top])}%)` : "–"));
      table.append(tr);
    });
    list.append(textEl("div", "av-panel-title", `${state.k} clusters`), table);
  }

  // ---- the details: a cluster, a feature -------------------------------------------------------
  function clusterPanel(c) {
    const labels = model.get("heads") ?? [];
    const info = model.get("cluster_info") ?? {};
    const fresh = info.cluster === c && info.k === state.k;
    const box = el("div", "", { "data-testid": "cluster-panel", "data-cluster": String(c) });
    const profile = Array.from(state.profiles.subarray(c * state.cols, (c + 1) * state.cols));
    const title = textEl("div", "av-panel-title", `cluster ${c} · ${state.sizes[c]} features`, { "data-testid": "cluster-title" });
    title.prepend(swatch(c));
    box.append(title);
    box.append(textEl("div", "av-axis-title", "mean loading profile (share of decoder norm per head)"), barRows(labels, profile, "profile"));
    let ids;
    if (fresh && info.features?.shape) ids = Array.from(decodeArray(info.features).data);
    else ids = rankCluster(state, c).map(({ row }) => state.features[row]);
    const buttons = el("div", "hl-features", { "data-testid": "cluster-features", "data-features": ids.slice(0, LISTED).join(",") });
    for (const f of ids.slice(0, LISTED)) {
      const b = textEl("button", "av-feature", `F${f}`, { type: "button", "data-testid": `feature-${f}`, "aria-pressed": String(f === chosen()) });
      b.addEventListener("click", () => choose("feature", f));
      buttons.append(b);
    }
    const more = ids.length > LISTED ? ` (the first ${LISTED} of ${ids.length})` : "";
    box.append(textEl("div", "av-axis-title", `its features, nearest the centre first${more}`), buttons);
    if (fresh && info.tokens) {
      const table = el("table", "av-table", { "data-testid": "cluster-tokens" });
      const tr = el("tr");
      for (const [t, left] of [["token", true], ["times top", false], ["features", false]]) tr.append(textEl("th", left ? "av-left" : "", t));
      table.append(tr);
      for (const row of info.tokens) {
        const r = el("tr", "", { "data-testid": "cluster-token" });
        r.append(textEl("td", "av-left", displayToken(row.token, 24), { title: row.token }), textEl("td", "", String(row.count)), textEl("td", "", String(row.features)));
        table.append(r);
      }
      box.append(textEl("div", "av-axis-title", `tokens its ${info.tokens_from} features nearest the centre fire on most (their 8 strongest held-out positions each)`), table);
    }
    if (fresh && info.heads) {
      const what = model.get("head_kind") === "kv" ? "attention the query heads pay to where they fire" : "|DFA| share per head at each one's top example";
      box.append(textEl("div", "av-axis-title", `heads that carry it: ${what}, mean over ${info.heads.features} features`), barRows(info.heads.labels, info.heads.share, "cluster-heads"));
    }
    if (!model.get("has_model")) box.append(textEl("div", "av-note", "Tokens and heads of a cluster need the model: HeadLoadingExplorer(sae, model)."));
    return box;
  }

  function dfaPanel(d) {
    const cells = decodeArray(d.cells);
    const [rows, cols] = cells.shape;
    const box = el("div", "", { "data-testid": "feature-dfa" });
    const cv = el("canvas", "av-heatmap", { "data-testid": "dfa-heatmap", "data-rows": String(rows), "data-cols": String(cols), width: String(cols), height: String(rows) });
    const cellW = Math.min(14, 520 / Math.max(1, cols));
    Object.assign(cv.style, { width: `${Math.round(cols * cellW)}px`, height: `${rows * 12}px`, imageRendering: "pixelated" });
    const bound = Math.max(...Array.from(cells.data, Math.abs), 1e-12);
    const ctx = cv.getContext("2d");
    if (ctx !== null) ctx.putImageData(new ImageData(divergingColorize(cells.data, rows, cols, bound), cols, rows), 0, 0);
    cv.addEventListener("mousemove", (event) => {
      const rect = cv.getBoundingClientRect();
      const col = Math.min(cols - 1, Math.floor(((event.clientX - rect.left) / rect.width) * cols));
      const row = Math.min(rows - 1, Math.floor(((event.clientY - rect.top) / rect.height) * rows));
      const v = cells.data[row * cols + col];
      tooltip.show([`head ${row}`, `source ${col}: "${displayToken(d.tokens[col], 24)}"`, `contribution ${formatSigned(v, 4)}`], event, { head: row, source: col, contribution: v });
    });
    cv.addEventListener("mouseleave", () => tooltip.hide());
    box.append(
      textEl("div", "av-axis-title", `direct feature attribution at its top example (context ${d.context}, destination ${d.dest} "${displayToken(d.tokens[d.dest], 20)}"): heads ↓ × source tokens →; pre-activation ${formatSigned(d.pre_activation, 3)} = cells + bias remainder ${formatSigned(d.remainder, 3)}; blue −, red +, ends ±${fixed(bound, 3)}`),
      cv,
    );
    return box;
  }

  function featurePanel(f) {
    const info = model.get("feature_info") ?? {};
    const fresh = info.feature === f;
    const row = rowOf(state, f);
    const cluster = fresh ? info.cluster : row >= 0 ? state.labels[row] : -1;
    const box = el("div", "", { "data-testid": "feature-panel", "data-feature": String(f) });
    box.append(textEl("div", "av-panel-title", `feature F${f} · ${cluster >= 0 ? `cluster ${cluster}` : "not clustered (dead on the held-out text)"}`, { "data-testid": "feature-title" }));
    const share = fresh ? info.share : row >= 0 ? Array.from(state.loadings.subarray(row * state.cols, (row + 1) * state.cols)) : null;
    if (share) box.append(textEl("div", "av-axis-title", `head loadings (share of its decoder norm${fresh ? `, ${fixed(info.norm, 3)} in all` : ""})`), barRows(model.get("heads") ?? [], share, "feature-loadings"));
    if (fresh && info.density !== undefined) {
      const pct = (100 * info.density).toFixed(info.density < 0.01 ? 3 : 1);
      const over = info.n_tokens ? ` of ${info.n_tokens.toLocaleString("en-US")} held-out tokens` : "";
      box.append(textEl("div", "av-axis-title", `fires on ${pct}%${over} (${info.dead} of the SAE's features never fire there)`, { "data-testid": "density" }), densityChart(info, "SAE features"));
    }
    if (fresh && info.examples) {
      if (info.examples.length) box.append(textEl("div", "av-axis-title", "max-activating held-out contexts (outlined: where it fires most)"), ...exampleLines(info.examples));
      else box.append(textEl("div", "av-note", "It does not fire on the held-out contexts."));
    }
    if (fresh && info.dfa?.cells) box.append(dfaPanel(info.dfa));
    if (!fresh && frame.isStatic) box.append(textEl("div", "av-note", "Examples, density and DFA of another feature need the notebook."));
    return box;
  }

  function drawDetail() {
    detail.replaceChildren();
    if (!state) return;
    const c = selected();
    const f = chosen();
    if (c >= 0 && c < state.k) detail.append(clusterPanel(c));
    if (f >= 0) detail.append(featurePanel(f));
    if (c < 0 && f < 0) detail.append(textEl("div", "av-note", "Click a cluster (heatmap band, size plot, map or list) to see its profile and features.", { "data-testid": "hint" }));
  }

  // ---- the whole -------------------------------------------------------------------------------
  function drawSummary() {
    const cl = model.get("clustering") ?? {};
    const notes = model.get("notes") ?? [];
    about.replaceChildren(textEl("div", "", model.get("dictionary") ?? ""), ...notes.map((n) => textEl("div", "", n, { "data-testid": "note" })));
    summary.replaceChildren();
    if (!state) return;
    const sil = (v) => (typeof v === "number" ? fixed(v, 3) : "–");
    summary.append(
      textEl("span", "", `k = ${cl.k}: silhouette ${sil(cl.silhouette)} (shuffled null ${sil(cl.null_silhouette)}) · cluster sizes ${fitText(cl.fit)} (null ${fitText(cl.null_fit)})`, { "data-testid": "fit" }),
    );
  }

  function syncSlider() {
    const ks = model.get("ks") ?? [];
    const n = state?.n ?? 0;
    const hi = Math.max(2, Math.min(ks.length ? ks[ks.length - 1] : 2, n));
    slider.min = String(Math.max(2, ks[0] ?? 2));
    slider.max = String(hi);
    slider.value = String(model.get("k") || slider.min);
    kValue.textContent = state ? String(model.get("k")) : "…";
    slider.disabled = frame.isStatic || !state;
  }

  function renderAll() {
    try {
      state = decodeState(model.get("data"), model.get("clustering"));
    } catch {
      state = null;
    }
    root.dataset.analysed = String(state !== null);
    root.dataset.k = String(state?.k ?? 0);
    root.dataset.nFeatures = String(state?.n ?? 0);
    syncSlider();
    drawSummary();
    drawHeatmap();
    drawCharts();
    drawMap();
    drawList();
    drawDetail();
    frame.renderStatus();
  }

  function renderSelection() {
    root.dataset.cluster = String(selected());
    root.dataset.feature = String(chosen());
    markCluster();
    markSizes();
    paintMap();
    drawList();
    drawDetail();
    frame.renderStatus();
  }

  // The slider asks for k-means at a new k; changes while one runs collapse into the latest.
  let wanted = null;
  let running = false;
  async function ask(k) {
    wanted = k;
    if (running) return;
    running = true;
    while (wanted !== null) {
      const next = wanted;
      wanted = null;
      if (next === model.get("k")) continue;
      const out = await frame.call("cluster", { k: next }, { label: `k-means at k = ${next}` });
      if (out.status !== "answer") syncSlider();
    }
    running = false;
  }
  slider.addEventListener("input", () => {
    kValue.textContent = slider.value;
  });
  slider.addEventListener("change", () => ask(Number(slider.value)));

  const scheduleAll = batched(renderAll);
  frame.listen({
    "change:data": scheduleAll,
    "change:clustering": scheduleAll,
    "change:charts": scheduleAll,
    "change:notes": drawSummary,
    "change:k": syncSlider,
    "change:cluster": renderSelection,
    "change:feature": renderSelection,
    "change:cluster_info": () => {
      frame.settled();
      drawDetail();
      frame.renderStatus();
    },
    "change:feature_info": () => {
      frame.settled();
      drawDetail();
      frame.renderStatus();
    },
  });
  renderAll();
  renderSelection();
  if (!model.get("analysed") && !frame.isStatic && model.get("heads")?.length) frame.call("analyse", {}, { label: "k-means sweep" });
  return () => frame.dispose();
}

export default { render };
