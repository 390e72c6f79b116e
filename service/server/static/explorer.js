// The attention explorer: a reference client of POST /attend. It builds the request from the form, sends it,
// and draws the answer: a weights heatmap per layer and head (or the head average), all heads as small
// multiples, token-to-token links, the five steps of one cell, and the tensors of one head as tables.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], response: null, raw: "", view: null, cell: { query: 0, key: 0 } };
const AVERAGE = "average";

// ---- the request -------------------------------------------------------------------------------------------

function mode() { return document.querySelector("input[name=mode]:checked").value; }
function isToy() { return $("model").value === "toy"; }

function buildRequest() {
  const body = { include: ["q", "k", "v", "scores", "scaled_scores", "weights", "context", "output"] };
  if (mode() === "text") {
    const lines = $("text").value.split("\n").map((line) => line.trim()).filter((line) => line.length > 0);
    body.text = lines.length === 1 ? lines[0] : lines.length === 0 ? "" : lines;
    body.model = $("model").value;
    if (isToy()) {
      body.d_model = Number($("d_model").value);
      body.num_heads = Number($("num_heads").value);
      body.weights = { seed: Number($("seed").value) };
    } else {
      const layer = $("layer").value;
      body.layer = layer === "all" ? "all" : Number(layer);
    }
  } else {
    let fields;
    try {
      fields = JSON.parse($("json").value);
    } catch (error) {
      throw { field: "json", message: `not valid JSON: ${error.message}` };
    }
    if (fields === null || typeof fields !== "object" || Array.isArray(fields)) {
      throw { field: "json", message: "expected a JSON object of request fields, e.g. {\"embeddings\": [[1, 0], [0, 1]]}" };
    }
    Object.assign(body, fields);
    body.num_heads = Number($("num_heads").value);
    const weights = body.weights || {};
    if ("embeddings" in body && !("w_q" in weights)) body.weights = { ...weights, seed: Number($("seed").value) };
  }
  const scale = $("scale").value.trim();
  if (scale !== "") {
    const value = Number(scale);
    if (!Number.isFinite(value)) throw { field: "scale", message: `found ${JSON.stringify(scale)}; expected a number` };
    body.scale = value;
  }
  body.causal = $("causal").checked;
  return body;
}

// ---- errors next to their fields ---------------------------------------------------------------------------

const FIELD_OF = {
  text: "text", model: "model", layer: "layer", d_model: "d_model", num_heads: "num_heads", d_k: "num_heads",
  d_v: "num_heads", scale: "scale", causal: "causal", seed: "seed",
};

function clearErrors() {
  document.querySelectorAll(".field-error").forEach((element) => { element.textContent = ""; });
  document.querySelectorAll(".invalid").forEach((element) => element.classList.remove("invalid"));
}

function showError(field, message) {
  const slot = document.querySelector(`.field-error[data-for="${field}"]`) || $("general-error");
  slot.textContent = slot.textContent ? `${slot.textContent}\n${message}` : message;
  const input = $(field);
  if (input) input.classList.add("invalid");
}

function fieldOf(loc) {
  const path = (loc || []).filter((part) => part !== "body");
  if (path[0] === "weights" && path[1] === "seed") return "seed";
  if (mode() === "json" && !["num_heads", "scale", "causal", "d_k", "d_v"].includes(path[0])) return "json";
  return FIELD_OF[path[0]] || "general";
}

function showApiError(status, payload) {
  if (status === 422 && Array.isArray(payload.detail)) {
    for (const item of payload.detail) {
      const where = (item.loc || []).filter((part) => part !== "body").join(".");
      showError(fieldOf(item.loc), where ? `${where}: ${item.msg}` : item.msg);
    }
  } else {
    const detail = typeof payload.detail === "string" ? payload.detail : JSON.stringify(payload);
    showError("general", `HTTP ${status}: ${detail}`);
  }
}

// ---- the response, as layers of one batch item --------------------------------------------------------------

function layersOf(response) {
  if (Array.isArray(response.layers)) return response.layers;
  return [{ layer: 0, ...response }];
}

function tokensOf(response, batch) {
  if (response.tokens) return response.tokens[batch];
  const seq = response.meta.seq;
  return Array.from({ length: seq }, (_, index) => `x${index}`);
}

function keyTokensOf(response, batch) {
  if (response.tokens) return response.tokens[batch];
  return Array.from({ length: response.meta.seq_kv }, (_, index) => `k${index}`);
}

// [query][key] of one batch item and head, or the mean over heads; trimmed to the real tokens
function weightMatrix(layer, batch, head, rows, cols) {
  const heads = layer.weights[batch];
  const pick = (h) => heads[h].slice(0, rows).map((row) => row.slice(0, cols));
  if (head !== AVERAGE) return pick(head);
  const sum = pick(0).map((row) => row.map(() => 0));
  heads.forEach((_, h) => pick(h).forEach((row, i) => row.forEach((value, j) => { sum[i][j] += value / heads.length; })));
  return sum;
}

// ---- drawing ----------------------------------------------------------------------------------------------

function colour(value) {
  const t = Math.max(0, Math.min(1, value ?? 0));
  const r = Math.round(255 - 224 * t), g = Math.round(255 - 160 * t), b = Math.round(255 - 64 * t);
  return `rgb(${r},${g},${b})`;
}

function layoutFor(n, m, size, labelled) {
  const labels = labelled && Math.max(n, m) <= 48 ? 90 : 0;
  const cell = Math.max(2, Math.min(40, Math.floor((size - labels) / Math.max(n, m))));
  return { labels, cell, width: labels + cell * m, height: labels + cell * n };
}

function drawHeatmap(canvas, matrix, rowLabels, colLabels, size) {
  const n = matrix.length, m = n ? matrix[0].length : 0;
  const geometry = layoutFor(n, m, size, rowLabels.length > 0);
  const largest = Math.max(1e-12, ...matrix.flat().filter((value) => value !== null));  // colours span 0..largest
  canvas.width = geometry.width;
  canvas.height = geometry.height;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const { labels, cell } = geometry;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      context.fillStyle = matrix[i][j] === null ? "#d9d9d9" : colour(matrix[i][j] / largest);
      context.fillRect(labels + j * cell, labels + i * cell, cell, cell);
    }
  }
  if (labels) {
    context.fillStyle = "#1d232b";
    context.font = `${Math.min(12, cell)}px system-ui, sans-serif`;
    context.textAlign = "right";
    context.textBaseline = "middle";
    rowLabels.forEach((label, i) => context.fillText(label, labels - 4, labels + (i + 0.5) * cell, labels - 6));
    colLabels.forEach((label, j) => {
      context.save();
      context.translate(labels + (j + 0.5) * cell, labels - 4);
      context.rotate(-Math.PI / 2);
      context.textAlign = "left";
      context.fillText(label, 0, 0, labels - 6);
      context.restore();
    });
  }
  Object.assign(canvas.dataset, { rows: n, cols: m, labels, cell });  // the geometry, for tests and other tools
  return geometry;
}

function drawLinks(canvas, matrix, queries, keys) {
  const context = canvas.getContext("2d");
  const rowHeight = Math.max(3, Math.min(22, Math.floor(560 / Math.max(queries.length, keys.length, 1))));
  canvas.height = rowHeight * Math.max(queries.length, keys.length) + 10;
  context.clearRect(0, 0, canvas.width, canvas.height);
  const left = 110, right = canvas.width - 110;
  const y = (index) => 5 + (index + 0.5) * rowHeight;
  context.lineCap = "round";
  matrix.forEach((row, i) => row.forEach((weight, j) => {
    if (weight === null || weight < 0.02) return;  // faint lines would only hide the strong ones
    context.strokeStyle = `rgba(31, 95, 191, ${Math.min(1, 0.15 + weight)})`;
    context.lineWidth = Math.max(0.5, weight * Math.min(8, rowHeight * 0.6));
    context.beginPath();
    context.moveTo(left, y(i));
    context.lineTo(right, y(j));
    context.stroke();
  }));
  if (rowHeight >= 9) {
    context.fillStyle = "#1d232b";
    context.font = `${Math.min(12, rowHeight - 1)}px system-ui, sans-serif`;
    context.textBaseline = "middle";
    context.textAlign = "right";
    queries.forEach((token, i) => context.fillText(token, left - 6, y(i), 100));
    context.textAlign = "left";
    keys.forEach((token, j) => context.fillText(token, right + 6, y(j), 100));
  }
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "−∞";
  return Number(value).toFixed(digits);
}

function table(title, shape, rows, rowLabels, colLabel) {
  const width = rows.length ? rows[0].length : 0;
  const head = `<tr><th></th>${Array.from({ length: width }, (_, j) => `<th>${colLabel(j)}</th>`).join("")}</tr>`;
  const body = rows.map((row, i) => `<tr><th>${escapeHtml(rowLabels[i])}</th>${row.map((v) => `<td>${fmt(v)}</td>`).join("")}</tr>`);
  return `<div class="table-wrap"><table data-tensor="${title}"><caption>${title} <small>[${shape.join(", ")}]</small></caption>${head}${body.join("")}</table></div>`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" }[c]));
}

// ---- the view ----------------------------------------------------------------------------------------------

function currentView() {
  const response = state.response;
  const layers = layersOf(response);
  const layer = layers[Number($("view-layer").value)];
  const batch = Number($("view-batch").value);
  const headValue = $("view-head").value;
  const head = headValue === AVERAGE ? AVERAGE : Number(headValue);
  const lengths = response.meta.lengths;
  const rows = lengths ? lengths[batch] : response.meta.seq;
  const cols = lengths ? lengths[batch] : response.meta.seq_kv;
  const queries = tokensOf(response, batch).slice(0, rows);
  const keys = keyTokensOf(response, batch).slice(0, cols);
  return { response, layer, batch, head, rows, cols, queries, keys };
}

function render() {
  const started = performance.now();
  const view = (state.view = currentView());
  const matrix = weightMatrix(view.layer, view.batch, view.head, view.rows, view.cols);
  view.matrix = matrix;
  view.geometry = drawHeatmap($("heatmap"), matrix, view.queries, view.keys, 560);
  drawLinks($("links"), matrix, view.queries, view.keys);
  renderGrid(view);
  renderTables(view);
  renderSteps(view);
  const meta = view.response.meta;
  const headText = view.head === AVERAGE ? "average of all heads" : `head ${view.head}`;
  $("meta-line").textContent = `${meta.model ? `model ${meta.model}, ` : ""}layer ${view.layer.layer}, ${headText}; `
    + `${meta.num_heads} heads of d_k ${meta.d_k}; scale ${fmt(meta.scale, 6)}; ${meta.dtype} on ${meta.device}; `
    + `${meta.elapsed_ms} ms in the service, drawn in ${(performance.now() - started).toFixed(0)} ms`;
  $("results").dataset.renderMs = (performance.now() - started).toFixed(1);
}

function renderGrid(view) {
  const grid = $("grid");
  grid.replaceChildren();
  const heads = view.layer.weights[view.batch].length;
  for (let h = 0; h < heads; h++) {
    const figure = document.createElement("figure");
    figure.dataset.head = String(h);
    if (h === view.head) figure.classList.add("selected");
    const canvas = document.createElement("canvas");
    drawHeatmap(canvas, weightMatrix(view.layer, view.batch, h, view.rows, view.cols), [], [], 120);
    const caption = document.createElement("figcaption");
    caption.textContent = `head ${h}`;
    figure.append(canvas, caption);
    figure.addEventListener("click", () => { $("view-head").value = String(h); render(); });
    grid.append(figure);
  }
}

function headSlice(tensor, view, head, rows) {
  return tensor[view.batch][head].slice(0, rows);
}

function renderTables(view) {
  const head = view.head === AVERAGE ? 0 : view.head;
  const layer = view.layer;
  const note = view.head === AVERAGE ? "<p>Showing head 0 (pick a head to see its tensors).</p>" : "";
  const parts = [note];
  const dims = (name) => (j) => `${name}${j}`;
  for (const [name, rows, labels] of [["q", view.rows, view.queries], ["k", view.cols, view.keys], ["v", view.cols, view.keys]]) {
    const data = headSlice(layer[name], view, head, rows);
    parts.push(table(name.toUpperCase(), [data.length, data[0].length], data, labels, dims("d")));
  }
  const scores = headSlice(layer.scores, view, head, view.rows).map((row) => row.slice(0, view.cols));
  parts.push(table("scores", [scores.length, view.cols], scores, view.queries, (j) => escapeHtml(view.keys[j])));
  const output = layer.output[view.batch].slice(0, view.rows);
  parts.push(table("output (all heads)", [output.length, output[0].length], output, view.queries, dims("o")));
  $("tables").innerHTML = parts.join("");
}

function renderSteps(view) {
  const steps = $("steps");
  if (view.rows > 24 || view.cols > 24) {
    steps.innerHTML = "<p>The step-through is for small inputs (up to 24 tokens).</p>";
    return;
  }
  const head = view.head === AVERAGE ? 0 : view.head;
  const layer = view.layer;
  const query = Math.min(state.cell.query, view.rows - 1), key = Math.min(state.cell.key, view.cols - 1);
  const q = layer.q[view.batch][head][query], k = layer.k[view.batch][head][key];
  const scale = view.response.meta.scale;
  const scaledRow = layer.scaled_scores[view.batch][head][query].slice(0, view.cols);
  const dot = q.reduce((sum, value, d) => sum + value * k[d], 0);
  const finite = scaledRow.filter((value) => value !== null);
  const top = Math.max(...finite);
  const denominator = finite.reduce((sum, value) => sum + Math.exp(value - top), 0);
  const scaled = scaledRow[key];
  const weight = scaled === null ? 0 : Math.exp(scaled - top) / denominator;
  const weights = layer.weights[view.batch][head][query].slice(0, view.cols);
  const v = layer.v[view.batch][head];
  const context0 = weights.reduce((sum, w, j) => sum + w * v[j][0], 0);
  const terms = q.slice(0, 6).map((value, d) => `${fmt(value, 3)}×${fmt(k[d], 3)}`).join(" + ");
  const options = (labels, selected) => labels.map((label, i) => `<option value="${i}"${i === selected ? " selected" : ""}>${i}: ${escapeHtml(label)}</option>`).join("");
  steps.innerHTML = `
    <div class="row"><label>Query <select id="step-query">${options(view.queries, query)}</select></label>
      <label>Key <select id="step-key">${options(view.keys, key)}</select></label>
      ${view.head === AVERAGE ? "<span>(head 0)</span>" : ""}</div>
    <div class="step" data-step="project"><b>1. Project</b> q = x W<sub>q</sub> + b<sub>q</sub> = [${q.slice(0, 8).map((x) => fmt(x, 3)).join(", ")}${q.length > 8 ? ", …" : ""}],
      k = x W<sub>k</sub> + b<sub>k</sub> = [${k.slice(0, 8).map((x) => fmt(x, 3)).join(", ")}${k.length > 8 ? ", …" : ""}]</div>
    <div class="step" data-step="scores"><b>2. Score</b> <code class="math">q·k = ${terms}${q.length > 6 ? " + …" : ""} = ${fmt(dot)}</code>
      (service: ${fmt(layer.scores[view.batch][head][query][key])})</div>
    <div class="step" data-step="scale"><b>3. Scale</b> <code class="math">${fmt(dot)} × ${fmt(scale, 6)} = ${scaled === null ? "masked (−∞)" : fmt(dot * scale)}</code></div>
    <div class="step" data-step="softmax"><b>4. Softmax</b> <code class="math">exp(${fmt(scaled)} − ${fmt(top)}) / Σ<sub>j</sub> exp(s<sub>j</sub> − ${fmt(top)}) = ${fmt(Math.exp((scaled ?? -Infinity) - top))} / ${fmt(denominator)} = ${fmt(weight)}</code>
      (service: <span id="step-weight">${fmt(weights[key])}</span>)</div>
    <div class="step" data-step="sum"><b>5. Weighted sum</b> <code class="math">context[0] = Σ<sub>j</sub> w<sub>j</sub> v<sub>j</sub>[0] = ${weights.slice(0, 4).map((w, j) => `${fmt(w, 3)}×${fmt(v[j][0], 3)}`).join(" + ")}${weights.length > 4 ? " + …" : ""} = ${fmt(context0)}</code>
      (service: ${fmt(layer.context[view.batch][head][query][0])})</div>`;
  $("step-query").addEventListener("change", (event) => { state.cell.query = Number(event.target.value); renderSteps(state.view); });
  $("step-key").addEventListener("change", (event) => { state.cell.key = Number(event.target.value); renderSteps(state.view); });
}

function onHeatmapPointer(event) {
  const view = state.view;
  if (!view) return;
  const rect = $("heatmap").getBoundingClientRect();
  const { labels, cell } = view.geometry;
  const j = Math.floor((event.clientX - rect.left - labels) / cell);
  const i = Math.floor((event.clientY - rect.top - labels) / cell);
  if (i < 0 || j < 0 || i >= view.rows || j >= view.cols) {
    $("hover-value").textContent = "Point at a cell";
    return;
  }
  const value = view.matrix[i][j];
  $("hover-value").textContent = `query ${i} "${view.queries[i]}" → key ${j} "${view.keys[j]}": ${value === null ? "masked" : fmt(value, 6)}`;
  $("hover-value").dataset.value = value === null ? "" : String(value);
  $("hover-value").dataset.cell = `${i},${j}`;
}

function onHeatmapClick(event) {
  onHeatmapPointer(event);
  const cell = $("hover-value").dataset.cell;
  if (!cell) return;
  const [query, key] = cell.split(",").map(Number);
  state.cell = { query, key };
  renderSteps(state.view);
}

// ---- the form, the run, the downloads -----------------------------------------------------------------------

function fillSelect(select, values, label) {
  select.replaceChildren(...values.map((value) => new Option(label(value), String(value))));
}

function showResponse(response) {
  state.response = response;
  const layers = layersOf(response);
  fillSelect($("view-layer"), layers.map((_, index) => index), (index) => `layer ${layers[index].layer}`);
  const batch = response.meta.batch;
  fillSelect($("view-batch"), Array.from({ length: batch }, (_, b) => b), (b) => (response.tokens ? response.tokens[b].join(" ").slice(0, 40) : `item ${b}`));
  $("view-batch").parentElement.hidden = batch === 1;
  fillSelect($("view-head"), [AVERAGE, ...Array.from({ length: response.meta.num_heads }, (_, h) => h)],
    (h) => (h === AVERAGE ? "average of heads" : `head ${h}`));
  $("view-head").value = "0";
  $("results").hidden = false;
  render();
}

async function run(event) {
  event.preventDefault();
  clearErrors();
  let body;
  try {
    body = buildRequest();
  } catch (problem) {
    showError(problem.field || "general", problem.message || String(problem));
    return;
  }
  $("run").disabled = true;
  $("status").textContent = "computing…";
  try {
    const reply = await fetch("/attend", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const text = await reply.text();
    let payload;
    try { payload = JSON.parse(text); } catch { payload = { detail: text }; }
    if (!reply.ok) {
      showApiError(reply.status, payload);
      $("status").textContent = `error ${reply.status}`;
      return;
    }
    state.raw = text;
    $("status").textContent = `${(text.length / 1024).toFixed(0)} kB in ${payload.meta.elapsed_ms} ms`;
    showResponse(payload);
  } catch (error) {
    showError("general", `the service could not be reached: ${error.message}`);
    $("status").textContent = "";
  } finally {
    $("run").disabled = false;
  }
}

function download(name, blob) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function syncForm() {
  const text = mode() === "text";
  document.querySelector(".mode-text").hidden = !text;
  document.querySelector(".mode-json").hidden = text;
  const pretrained = text && !isToy();
  document.querySelectorAll(".not-pretrained").forEach((element) => { element.hidden = pretrained; });
  document.querySelectorAll(".toy-only").forEach((element) => { element.hidden = !(text && isToy()); });
  $("layer").parentElement.hidden = !pretrained;
  const model = state.models.find((entry) => entry.name === $("model").value);
  if (model && model.layers) {
    const current = $("layer").value;
    fillSelect($("layer"), ["all", ...Array.from({ length: model.layers }, (_, i) => i)], (value) => (value === "all" ? "all layers" : `layer ${value}`));
    if ([...$("layer").options].some((option) => option.value === current)) $("layer").value = current;
  }
}

async function loadModels() {
  try {
    const listing = await (await fetch("/models")).json();
    state.models = listing.models;
    const names = [...listing.models.map((model) => model.name), "toy"];
    fillSelect($("model"), names, (name) => (name === "toy" ? "toy (seeded embeddings)" : name));
    $("model").value = listing.default;
  } catch (error) {
    showError("model", `GET /models failed: ${error.message}`);
  }
  syncForm();
}

function init() {
  $("json").value = JSON.stringify({ embeddings: [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]], weights: { seed: 0 } });
  $("attend-form").addEventListener("submit", run);
  document.querySelectorAll("input[name=mode]").forEach((input) => input.addEventListener("change", syncForm));
  $("model").addEventListener("change", syncForm);
  for (const id of ["view-layer", "view-head", "view-batch"]) $(id).addEventListener("change", render);
  $("heatmap").addEventListener("pointermove", onHeatmapPointer);
  $("heatmap").addEventListener("click", onHeatmapClick);
  $("download-json").addEventListener("click", () => download("attention.json", new Blob([state.raw], { type: "application/json" })));
  $("download-png").addEventListener("click", () => $("heatmap").toBlob((blob) => download("attention-heatmap.png", blob)));
  loadModels();
}

init();
