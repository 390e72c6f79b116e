// The attention explorer: a reference client of POST /attend. It builds the request from the form, sends it,
// and shows the answer: a weights heatmap per layer and head (or the head average), all heads as small
// multiples, token-to-token links, the five steps of one cell, and the tensors of one head as tables.
// The pictures are drawn by drawing.js from Matrix objects; "reading the response" below is the only code that
// knows how the JSON answer is laid out.
import {
  cellImage, drawFigure, drawHeatmap, drawLegend, drawLinks, hasMasked, heatmapLayout, largestOf, linkRowAt,
} from "./drawing.js";
import { hideLongInput, initLongInputs, mayBeLong, showLongInput } from "./long-inputs.js";
import { kvSharing, maskCaption, modelLabel, modelSummary } from "./describe.js";
import { withText } from "./png-text.js";
import { headClicked, headsDrawn, startPredictions } from "./predictions.js";
import { readSafetensors } from "./safetensors.js";
import { readableTokens } from "./tokens.js";

const $ = (id) => document.getElementById(id);
const state = {
  models: [], response: null, request: null, view: null,
  run: null,                   // the current run: its request, and what has been fetched of its answer
  busy: 0,                     // fetches under way
  cell: { query: 0, key: 0 },  // the cell worked out step by step (picked by a click)
  hover: null,                 // the heatmap cell under the pointer
  pinned: null,                // the clicked cell: focused while the pointer is elsewhere
  linkQuery: null,             // the query under the pointer in the links view
  matrices: new Map(),         // weight matrices read from the response, by layer, batch item and head
};
const AVERAGE = "average";
const HEATMAP_SIZE = 620;
const POINT_AT_A_CELL = "Point at a cell";
const LINKS_ALL_UP_TO = 32;  // tokens; the links view's "auto" draws every link up to it, else the strongest
const TABLES_OPEN_UP_TO = 48;  // tokens; larger inputs start with the tensor tables closed (see renderTables)

// ---- the request -------------------------------------------------------------------------------------------

function mode() { return document.querySelector("input[name=mode]:checked").value; }
function selectedModel() {
  return state.models.find((entry) => entry.name === $("model").value);
}
function isToy() {
  const model = selectedModel();
  return model ? model.toy === true : $("model").value === "toy";
}

function buildRequest() {
  const body = { include: [...ALL_TENSORS] };
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

// ---- reading the response: fetched in parts, as safetensors, and cached for the run ---------------------------
// A run fetches only what is drawn: first the weights (and the scaled scores, whose -inf marks masked cells) of
// the selected layer for all heads; another layer when it is picked; the other internals of one head (Q, K, V,
// scores, context, output) when the step-through or the tables show them, and a rotary model's q and k before the
// rotation when asked for. Tensors are {shape, data} with the API's axes: weights [batch, head, query, key]; the
// internals of one head carry a head axis of 1, except k and v under grouped-query attention: their kv_head axis
// is never cut by `heads`, so the head's own is picked by meta.kv_head_of.

const SAFETENSORS = "application/x-safetensors";
const LAYER_TENSORS = ["weights", "scaled_scores"];
const HEAD_TENSORS = ["q", "k", "v", "scores", "context", "output"];
const PRE_ROTARY_TENSORS = ["q_pre_rotary", "k_pre_rotary"];
const ALL_TENSORS = ["q", "k", "v", "scores", "scaled_scores", "weights", "context", "output"];

// the layers a request covers: [null] without a pretrained model (tensors at the top level), else their indexes
function layerKeysOf(body) {
  const model = state.models.find((entry) => entry.name === body.model);
  if (!("model" in body) || (model && model.toy)) return [null];
  if (Number.isInteger(body.layer)) return [body.layer];
  if (Array.isArray(body.layer)) return body.layer;
  return Array.from({ length: model && model.layers ? model.layers : 1 }, (_, index) => index);
}

class ApiRefusal extends Error {
  constructor(status, payload) {
    super(`HTTP ${status}`);
    Object.assign(this, { status, payload });
  }
}

// POST /attend for `include` of one layer (and one head), read as safetensors: { meta, tokens, tensors, bytes }
async function fetchTensors(run, layerKey, include, head) {
  const body = { ...run.body, include };
  if (layerKey !== null) body.layer = layerKey;
  if (head !== undefined) body.heads = [head];
  const reply = await fetch("/attend", {
    method: "POST", headers: { "content-type": "application/json", accept: SAFETENSORS }, body: JSON.stringify(body),
  });
  if (!reply.ok) {
    const text = await reply.text();
    let payload;
    try { payload = JSON.parse(text); } catch { payload = { detail: text }; }
    throw new ApiRefusal(reply.status, payload);
  }
  const buffer = await reply.arrayBuffer();
  const { metadata, tensors } = readSafetensors(buffer);
  const prefix = layerKey === null ? "" : `layers.${layerKey}.`;
  const named = Object.fromEntries(include.map((name) => [name, tensors[prefix + name]]));
  const tokens = metadata.tokens ? JSON.parse(metadata.tokens) : null;
  return { meta: JSON.parse(metadata.meta), tokens, tensors: named, bytes: buffer.byteLength };
}

// the weights of layer `index` of the run (all heads), fetched once
function layerData(run, index) {
  if (!run.layers.has(index)) {
    const key = run.layerKeys[index];
    const loading = fetchTensors(run, key, LAYER_TENSORS).then((answer) => {
      const layer = layerOf(key, answer);
      run.loaded.set(index, layer);
      return layer;
    }, (problem) => {
      run.layers.delete(index);  // asked again next time
      throw problem;
    });
    run.layers.set(index, tracked(loading));
  }
  return run.layers.get(index);
}

// one layer's answer: its index, its meta (its window), its tensors
function layerOf(key, answer) {
  return { layer: key ?? 0, meta: answer.meta, ...answer.tensors };
}

// `names` of one head of layer `index`, fetched once; with `kvHead`, where k and v are read (0: the one head
// returned, or under grouped-query attention the head's kv head)
function headData(run, index, head, names = HEAD_TENSORS, kind = "internals") {
  const key = `${index}/${head}/${kind}`;
  if (!run.heads.has(key)) {
    const loading = fetchTensors(run, run.layerKeys[index], names, head).then((answer) => {
      const kvHeadOf = answer.meta.kv_head_of;
      return { ...answer.tensors, kvHead: kvHeadOf ? kvHeadOf[head] : 0 };
    }, (problem) => {
      run.heads.delete(key);  // asked again next time
      throw problem;
    });
    run.heads.set(key, tracked(loading));
  }
  return run.heads.get(key);
}

// promises the page is waiting for: #results carries data-busy while there are any (the tests wait on it)
function tracked(promise) {
  state.busy += 1;
  $("results").dataset.busy = "true";
  const done = () => {
    state.busy -= 1;
    if (state.busy === 0) delete $("results").dataset.busy;
  };
  promise.then(done, done);
  return promise;
}

// the tokens as shown (byte-level ones readable: tokens.js); response.tokens holds them as the API gives them
function tokensOf(response, batch) {
  if (response.labels) return response.labels[batch];
  const seq = response.meta.seq;
  return Array.from({ length: seq }, (_, index) => `x${index}`);
}

function keyTokensOf(response, batch) {
  if (response.labels) return response.labels[batch];
  return Array.from({ length: response.meta.seq_kv }, (_, index) => `k${index}`);
}

function headCountOf(layer) {
  return layer.weights.shape[1];
}

// the [rows][cols] matrix of a [batch, head, rows, cols] tensor at (batch, head), as flat values and row length
function planeOf(tensor, batch, head) {
  const [, heads, rows, cols] = tensor.shape;
  const size = rows * cols;
  return { values: tensor.data.subarray((batch * heads + head) * size, (batch * heads + head + 1) * size), cols };
}

// the first `rows` rows of one batch item (and head) of a tensor as plain arrays, for tables and the steps
function rowsOf(tensor, batch, head, rows = Infinity) {
  const { values, cols } = tensor.shape.length === 4 ? planeOf(tensor, batch, head)
    : { values: tensor.data.subarray(batch * tensor.shape[1] * tensor.shape[2], (batch + 1) * tensor.shape[1] * tensor.shape[2]), cols: tensor.shape[2] };
  const count = Math.min(rows, values.length / cols);
  return Array.from({ length: count }, (_, i) => Array.from(values.subarray(i * cols, (i + 1) * cols)));
}

// The [query][key] weights of one batch item and head, or their mean over the heads, trimmed to the real
// tokens, as a Matrix (drawing.js); masked entries (-inf in scaled_scores) are NaN
function weightMatrix(layer, batch, head, rows, cols) {
  const heads = head === AVERAGE ? Array.from({ length: headCountOf(layer) }, (_, h) => h) : [head];
  const values = new Float32Array(rows * cols);
  const maskedIn = new Uint16Array(rows * cols);
  for (const h of heads) {
    const weights = planeOf(layer.weights, batch, h), scaled = planeOf(layer.scaled_scores, batch, h);
    const width = weights.cols;
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        if (scaled.values[i * width + j] === -Infinity) maskedIn[i * cols + j] += 1;
        else values[i * cols + j] += weights.values[i * width + j];
      }
    }
  }
  for (let index = 0; index < values.length; index++) {
    values[index] = maskedIn[index] === heads.length ? NaN : values[index] / heads.length;
  }
  return { rows, cols, values };
}

// ---- tables and the step-through (HTML) ---------------------------------------------------------------------

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined || value === -Infinity || Number.isNaN(value)) return "−∞";
  return Number(value).toFixed(digits);
}

// a table of `rows`; its data-tensor is `tensor` (default the title), `note` follows the title in the caption
function table(title, shape, rows, rowLabels, colLabel, { tensor = title, note = "" } = {}) {
  const width = rows.length ? rows[0].length : 0;
  const head = `<tr><th></th>${Array.from({ length: width }, (_, j) => `<th>${colLabel(j)}</th>`).join("")}</tr>`;
  const body = rows.map((row, i) => `<tr><th>${escapeHtml(rowLabels[i])}</th>${row.map((v) => `<td>${fmt(v)}</td>`).join("")}</tr>`);
  const caption = `${title}${note ? ` ${escapeHtml(note)}` : ""} <small>[${shape.join(", ")}]</small>`;
  return `<div class="table-wrap"><table data-tensor="${tensor}"><caption>${caption}</caption>${head}${body.join("")}</table></div>`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" }[c]));
}

// The tables are built only while their section is open: at 128 tokens they are some 30,000 cells, whose HTML
// takes several times as long as all the pictures, so larger inputs start with the section closed.
function renderTables(view) {
  const section = $("tables-section");
  section.dataset.built = String(section.open);
  if (!section.open) {
    $("tables").replaceChildren();
    return;
  }
  const internals = view.internals;
  if (!internals) {
    section.dataset.built = "false";
    $("tables").innerHTML = `<p>Fetching the tensors of head ${headOf(view)}…</p>`;
    return;
  }
  const note = view.head === AVERAGE ? "<p>Showing head 0 (pick a head to see its tensors).</p>" : "";
  const parts = [note];
  const dims = (name) => (j) => `${name}${j}`;
  const kvNote = view.response.meta.kv_head_of ? `of kv head ${internals.kvHead}` : "";
  const rotary = view.response.meta.positions === "rotary";
  const pre = preRotaryShown(view) ? view.preRotary : null;
  for (const [name, rows, labels] of [["q", view.rows, view.queries], ["k", view.cols, view.keys], ["v", view.cols, view.keys]]) {
    const at = name === "q" ? 0 : internals.kvHead;
    const data = rowsOf(internals[name], view.batch, at, rows);
    const rotated = rotary && name !== "v" ? "after the rotary embedding" : "";
    const about = [name === "q" ? "" : kvNote, rotated].filter(Boolean).join(", ");
    parts.push(table(name.toUpperCase(), [data.length, data[0].length], data, labels, dims("d"), { note: about ? `(${about})` : "" }));
    if (name === "v" || !preRotaryShown(view)) continue;
    const tensor = `${name.toUpperCase()}_pre_rotary`;
    if (!pre) {
      parts.push(`<p data-tensor="${tensor}">Fetching ${name} before the rotary embedding…</p>`);
      continue;
    }
    const before = rowsOf(pre[`${name}_pre_rotary`], view.batch, at, rows);
    const beforeNote = [name === "q" ? "" : kvNote, "before the rotary embedding"].filter(Boolean).join(", ");
    parts.push(table(name.toUpperCase(), [before.length, before[0].length], before, labels, dims("d"), { tensor, note: `(${beforeNote})` }));
  }
  const scores = rowsOf(internals.scores, view.batch, 0, view.rows).map((row) => row.slice(0, view.cols));
  parts.push(table("scores", [scores.length, view.cols], scores, view.queries, (j) => escapeHtml(view.keys[j])));
  const output = rowsOf(internals.output, view.batch, 0, view.rows);
  parts.push(table("output (all heads)", [output.length, output[0].length], output, view.queries, dims("o")));
  $("tables").innerHTML = parts.join("");
}

function stepsShown(view) {
  return view.rows <= 24 && view.cols <= 24;
}

function renderSteps(view) {
  const steps = $("steps");
  if (!stepsShown(view)) {
    steps.innerHTML = "<p>The step-through is for small inputs (up to 24 tokens).</p>";
    return;
  }
  const internals = view.internals;
  if (!internals) {
    steps.innerHTML = `<p>Fetching the tensors of head ${headOf(view)}…</p>`;
    return;
  }
  const head = headOf(view);
  const query = Math.min(state.cell.query, view.rows - 1), key = Math.min(state.cell.key, view.cols - 1);
  const kvHead = internals.kvHead;
  const q = rowsOf(internals.q, view.batch, 0)[query], k = rowsOf(internals.k, view.batch, kvHead)[key];
  const meta = view.response.meta;
  const scale = meta.scale, cap = meta.softcap;
  const scaledRow = rowsOf(view.layer.scaled_scores, view.batch, head)[query].slice(0, view.cols);
  const dot = q.reduce((sum, value, d) => sum + value * k[d], 0);
  const finite = scaledRow.filter((value) => value !== -Infinity);
  const top = Math.max(...finite);
  const denominator = finite.reduce((sum, value) => sum + Math.exp(value - top), 0);
  const scaled = scaledRow[key];
  const weight = scaled === -Infinity ? 0 : Math.exp(scaled - top) / denominator;
  const weights = rowsOf(view.layer.weights, view.batch, head)[query].slice(0, view.cols);
  const v = rowsOf(internals.v, view.batch, kvHead);
  const context0 = weights.reduce((sum, w, j) => sum + w * v[j][0], 0);
  const vector = (values) => `[${values.slice(0, 8).map((x) => fmt(x, 3)).join(", ")}${values.length > 8 ? ", …" : ""}]`;
  const rotary = meta.positions === "rotary";
  const ofKv = meta.kv_head_of ? ` (kv head ${kvHead}, shared by the heads of its group)` : "";
  const project = rotary
    ? `<b>1. Project and rotate</b> q = rotary(x W<sub>q</sub> + b<sub>q</sub>, position ${query}) = ${vector(q)},
      k = rotary(x W<sub>k</sub> + b<sub>k</sub>, position ${key})${ofKv} = ${vector(k)}`
    : `<b>1. Project</b> q = x W<sub>q</sub> + b<sub>q</sub> = ${vector(q)},
      k = x W<sub>k</sub> + b<sub>k</sub>${ofKv} = ${vector(k)}`;
  const pre = preRotaryShown(view) ? view.preRotary : null;
  const before = !preRotaryShown(view) ? ""
    : pre ? `<div class="step" data-step="pre-rotary"><b>before rotation</b> q = ${vector(rowsOf(pre.q_pre_rotary, view.batch, 0)[query])},
      k = ${vector(rowsOf(pre.k_pre_rotary, view.batch, kvHead)[key])}: the scores are of the rotated q and k</div>`
      : "<div class=\"step\" data-step=\"pre-rotary\">Fetching q and k before the rotation…</div>";
  const product = dot * scale;
  const capped = cap ? ` → capped ${cap}·tanh(${fmt(product)} / ${cap}) = ${fmt(cap * Math.tanh(product / cap))}` : "";
  const scaling = scaled === -Infinity ? "masked (−∞)" : `${fmt(product)}${capped}`;
  const terms = q.slice(0, 6).map((value, d) => `${fmt(value, 3)}×${fmt(k[d], 3)}`).join(" + ");
  const options = (labels, selected) => labels.map((label, i) => `<option value="${i}"${i === selected ? " selected" : ""}>${i}: ${escapeHtml(label)}</option>`).join("");
  steps.innerHTML = `
    <div class="row"><label>Query <select id="step-query">${options(view.queries, query)}</select></label>
      <label>Key <select id="step-key">${options(view.keys, key)}</select></label>
      ${view.head === AVERAGE ? "<span>(head 0)</span>" : ""}</div>
    <div class="step" data-step="project">${project}</div>${before}
    <div class="step" data-step="scores" data-dot="${dot}"><b>2. Score</b> <code class="math">q·k = ${terms}${q.length > 6 ? " + …" : ""} = ${fmt(dot)}</code>
      (service: ${fmt(rowsOf(internals.scores, view.batch, 0)[query][key])})</div>
    <div class="step" data-step="scale" data-scaled="${cap ? cap * Math.tanh(product / cap) : product}"><b>3. Scale${cap ? " and cap" : ""}</b> <code class="math">${fmt(dot)} × ${fmt(scale, 6)} = ${scaling}</code>
      (service: ${fmt(scaled)})</div>
    <div class="step" data-step="softmax"><b>4. Softmax</b> <code class="math">exp(${fmt(scaled)} − ${fmt(top)}) / Σ<sub>j</sub> exp(s<sub>j</sub> − ${fmt(top)}) = ${fmt(Math.exp(scaled - top))} / ${fmt(denominator)} = ${fmt(weight)}</code>
      (service: <span id="step-weight">${fmt(weights[key])}</span>)</div>
    <div class="step" data-step="sum"><b>5. Weighted sum</b> <code class="math">context[0] = Σ<sub>j</sub> w<sub>j</sub> v<sub>j</sub>[0] = ${weights.slice(0, 4).map((w, j) => `${fmt(w, 3)}×${fmt(v[j][0], 3)}`).join(" + ")}${weights.length > 4 ? " + …" : ""} = ${fmt(context0)}</code>
      (service: ${fmt(rowsOf(internals.context, view.batch, 0)[query][0])})</div>`;
  const pick = (axis) => (event) => {
    state.cell[axis] = Number(event.target.value);
    state.pinned = { ...state.cell };
    renderSteps(state.view);
    drawFocused(state.view);
  };
  $("step-query").addEventListener("change", pick("query"));
  $("step-key").addEventListener("change", pick("key"));
}

// ---- the view: what is selected, and its pictures -----------------------------------------------------------

// the selection, with the data of its layer (null while that is being fetched) and of its head (if fetched)
function currentView() {
  const response = state.response;
  const layerIndex = Number($("view-layer").value);
  const layer = state.run.loaded.get(layerIndex);
  if (!layer) return null;
  const batch = Number($("view-batch").value);
  const headValue = $("view-head").value;
  const head = headValue === AVERAGE ? AVERAGE : Number(headValue);
  const lengths = response.meta.lengths;
  const rows = lengths ? lengths[batch] : response.meta.seq;
  const cols = lengths ? lengths[batch] : response.meta.seq_kv;
  const queries = tokensOf(response, batch).slice(0, rows);
  const keys = keyTokensOf(response, batch).slice(0, cols);
  const shownHead = head === AVERAGE ? 0 : head;
  const internals = state.run.internals.get(`${layerIndex}/${shownHead}/internals`);
  const preRotary = state.run.internals.get(`${layerIndex}/${shownHead}/pre-rotary`);
  return { response, layerIndex, layer, internals, preRotary, batch, head, rows, cols, queries, keys };
}

// the head whose internals are shown: the selected one, or head 0 for the average
function headOf(view) {
  return view.head === AVERAGE ? 0 : view.head;
}

// the selected layer drawn, once its weights are here (fetched on first sight)
function show() {
  const run = state.run, index = Number($("view-layer").value);
  if (run.loaded.has(index)) {
    render();
    return;
  }
  $("meta-line").textContent = `fetching layer ${run.layerKeys[index]}…`;
  layerData(run, index).then(() => {
    if (state.run === run && Number($("view-layer").value) === index) render();
  }, (problem) => {
    if (state.run === run) showFetchProblem(problem);
  });
}

// whether the run's model has rotary positions and q and k before the rotation are asked for
function preRotaryShown(view) {
  return view.response.meta.positions === "rotary" && $("pre-rotary").checked;
}

// the internals of the view's head, fetched when the step-through or the tables show them (q and k before the
// rotation when also asked for), then drawn
function fetchInternals(view) {
  if (!(stepsShown(view) || $("tables-section").open)) return;
  const wanted = [["internals", HEAD_TENSORS, "internals"]];
  if (preRotaryShown(view)) wanted.push(["pre-rotary", PRE_ROTARY_TENSORS, "preRotary"]);
  const run = state.run, head = headOf(view);
  for (const [kind, names, field] of wanted) {
    if (view[field]) continue;
    const key = `${view.layerIndex}/${head}/${kind}`;
    headData(run, view.layerIndex, head, names, kind).then((tensors) => {
      run.internals.set(key, tensors);
      const now = state.view;
      if (state.run !== run || !now || now.layerIndex !== view.layerIndex || headOf(now) !== head) return;
      now[field] = tensors;
      renderTables(now);
      renderSteps(now);
    }, (problem) => {
      if (state.run === run) showFetchProblem(problem);
    });
  }
}

// the weights of one head (or their average) of the view's layer and batch item, read once per response
function matrixOf(view, head) {
  const key = `${view.layerIndex}/${view.batch}/${head}`;
  if (!state.matrices.has(key)) state.matrices.set(key, weightMatrix(view.layer, view.batch, head, view.rows, view.cols));
  return state.matrices.get(key);
}

function sharedScale() {
  return $("shared-scale").checked;
}

function scaleMaxOf(matrix) {
  return sharedScale() ? 1 : largestOf(matrix);
}

function headText(view) {
  return view.head === AVERAGE ? `average of ${plural(headCountOf(view.layer), "head")}` : `head ${view.head}`;
}

function render() {
  const started = performance.now();
  const view = currentView();
  if (!view) return;
  state.view = view;
  view.matrix = matrixOf(view, view.head);
  state.hover = null;
  state.linkQuery = null;
  showReadout(null);
  drawPictures(view);
  renderTables(view);
  renderSteps(view);
  fetchInternals(view);
  const meta = view.response.meta;
  const kvHeads = meta.kv_head_of ? ` sharing ${plural(meta.num_kv_heads, "kv head")}` : "";
  $("meta-line").textContent = `${meta.model ? `model ${meta.model}, ` : ""}layer ${view.layer.layer}, ${headText(view)}; `
    + `${plural(meta.num_heads, "head")}${kvHeads} of d_k ${meta.d_k}; scale ${fmt(meta.scale, 6)}; ${meta.dtype} on ${meta.device}; `
    + `${meta.elapsed_ms} ms in the service, drawn in ${(performance.now() - started).toFixed(0)} ms`;
  $("results").dataset.renderMs = (performance.now() - started).toFixed(1);
  $("results").dataset.drawnAt = String(performance.now());  // when it was drawn (the tests time runs by it)
}

// the heatmap, its legend, the links and the small multiples of the view (no tables)
function drawPictures(view) {
  view.scaleMax = scaleMaxOf(view.matrix);
  view.cells = cellImage(view.matrix, view.scaleMax);
  view.layout = heatmapLayout(view.rows, view.cols, HEATMAP_SIZE, true);
  drawFocused(view);
  const masked = hasMasked(view.matrix);
  drawLegend($("legend"), view.scaleMax, { masked });
  $("legend-caption").textContent = sharedScale()
    ? "Colour: weight from 0 (white) to 1 (darkest), the same scale for every head"
    : `Colour: weight from 0 (white) to ${fmt(view.scaleMax)} (darkest), the largest weight of this view; `
      + "each small multiple is scaled to its own largest weight";
  $("mask-caption").textContent = `Layer ${view.layer.layer}: ${maskCaption(view.layer.meta, masked)}`
    + (masked ? "; grey cells are masked (weight exactly 0), not small weights" : "");
  $("kv-line").textContent = kvSharing(view.response.meta.kv_head_of, view.head === AVERAGE ? null : view.head);
  $("kv-line").hidden = !view.response.meta.kv_head_of;
  renderGrid(view);
}

function focusOf() {
  return state.hover ?? state.pinned;
}

function linkOptions(view) {
  const count = $("link-count").value;
  const perQuery = count === "all" ? Infinity
    : count === "auto" ? (Math.max(view.rows, view.cols) <= LINKS_ALL_UP_TO ? Infinity : 1) : Number(count);
  return { minWeight: Number($("link-min").value), perQuery };
}

// the heatmap and the links with the focused cell (hovered or clicked) outlined and labelled
function drawFocused(view) {
  const focus = focusOf();
  const valid = focus && focus.query < view.rows && focus.key < view.cols ? focus : null;
  drawHeatmap($("heatmap"), view.cells, view.layout, { rowLabels: view.queries, colLabels: view.keys, focus: valid });
  const focusQuery = state.linkQuery ?? (valid ? valid.query : null);
  drawLinks($("links"), view.matrix, view.queries, view.keys, { ...linkOptions(view), focusQuery });
  $("link-min-value").textContent = Number($("link-min").value).toFixed(2);
}

function renderGrid(view) {
  const grid = $("grid");
  grid.replaceChildren();
  for (let h = 0; h < headCountOf(view.layer); h++) {
    const matrix = matrixOf(view, h);
    const scaleMax = scaleMaxOf(matrix);
    const figure = document.createElement("figure");
    figure.dataset.head = String(h);
    if (h === view.head) figure.classList.add("selected");
    const kvHeadOf = view.response.meta.kv_head_of;
    if (kvHeadOf) {
      figure.dataset.kvHead = String(kvHeadOf[h]);
      if (view.head !== AVERAGE && kvHeadOf[h] === kvHeadOf[view.head]) figure.classList.add("same-kv");
    }
    const canvas = document.createElement("canvas");
    drawHeatmap(canvas, cellImage(matrix, scaleMax), heatmapLayout(view.rows, view.cols, 120, false));
    canvas.dataset.max = String(scaleMax);
    const caption = document.createElement("figcaption");
    const name = kvHeadOf ? `head ${h} · kv ${kvHeadOf[h]}` : `head ${h}`;
    caption.textContent = sharedScale() ? name : `${name} (max ${fmt(scaleMax, 2)})`;
    figure.append(canvas, caption);
    figure.addEventListener("click", () => {
      if (headClicked(view.layer.layer, h)) return;  // ablated instead (predictions.js)
      $("view-head").value = String(h);
      render();
    });
    grid.append(figure);
  }
  headsDrawn(grid, view.layer, view.batch, view.head);
}

// ---- pointing at cells and links ----------------------------------------------------------------------------

function showReadout(cell) {
  const readout = $("hover-value");
  if (!cell) {
    readout.textContent = POINT_AT_A_CELL;
    delete readout.dataset.value;
    delete readout.dataset.cell;
    return;
  }
  const view = state.view;
  const { query: i, key: j } = cell;
  const value = view.matrix.values[i * view.cols + j];
  const masked = Number.isNaN(value);
  readout.textContent = `query ${i} ${tokenText(view, i, view.queries[i])} → key ${j} ${tokenText(view, j, view.keys[j])}: `
    + `${masked ? "masked" : fmt(value, 6)}`;
  readout.dataset.value = masked ? "" : String(value);
  readout.dataset.cell = `${i},${j}`;
}

// a token as shown, in quotes, and as the API gives it where that differs ("␣cat" (Ġcat))
function tokenText(view, position, label) {
  const raw = view.response.tokens ? view.response.tokens[view.batch][position] : label;
  return raw === label ? `"${label}"` : `"${label}" (${raw})`;
}

function cellAt(event) {
  const view = state.view;
  const canvas = $("heatmap");
  const rect = canvas.getBoundingClientRect();
  const { margin, cell } = view.layout;
  const j = Math.floor((event.clientX - rect.left - canvas.clientLeft - margin) / cell);
  const i = Math.floor((event.clientY - rect.top - canvas.clientTop - margin) / cell);
  return i < 0 || j < 0 || i >= view.rows || j >= view.cols ? null : { query: i, key: j };
}

function sameCell(a, b) {
  return a === b || (a !== null && b !== null && a.query === b.query && a.key === b.key);
}

function onHeatmapPointer(event) {
  if (!state.view) return;
  const cell = cellAt(event);
  showReadout(cell);
  if (sameCell(cell, state.hover)) return;
  state.hover = cell;
  drawFocused(state.view);
}

function onHeatmapLeave() {
  if (!state.view) return;
  showReadout(null);
  state.hover = null;
  drawFocused(state.view);
}

function onHeatmapClick(event) {
  if (!state.view) return;
  const cell = cellAt(event);
  if (!cell) return;
  state.cell = { ...cell };
  state.pinned = { ...cell };
  onHeatmapPointer(event);
  renderSteps(state.view);
}

function onLinksPointer(event) {
  const view = state.view;
  if (!view) return;
  const canvas = $("links");
  const y = event.clientY - canvas.getBoundingClientRect().top - canvas.clientTop;
  const query = linkRowAt(y, Math.max(view.rows, view.cols));
  const inside = query >= 0 && query < view.rows ? query : null;
  if (inside === state.linkQuery) return;
  state.linkQuery = inside;
  drawFocused(view);
}

function onLinksLeave() {
  if (!state.view) return;
  state.linkQuery = null;
  drawFocused(state.view);
}

// ---- the form, the run, the downloads -----------------------------------------------------------------------

function fillSelect(select, values, label) {
  select.replaceChildren(...values.map((value) => new Option(label(value), String(value))));
}

function showResponse(response) {
  const text = state.run.body.text;
  const texts = typeof text === "string" ? [text] : Array.isArray(text) ? text : null;
  if (response.tokens) response.labels = readableTokens(response.tokens, response.meta.lengths, texts);
  const model = state.models.find((entry) => entry.name === state.run.body.model);
  startPredictions(state.run.body, model, response.tokens !== null && response.labels !== response.tokens);
  state.response = response;
  state.matrices.clear();
  state.pinned = null;
  state.cell = { query: 0, key: 0 };
  const keys = state.run.layerKeys;
  fillSelect($("view-layer"), keys.map((_, index) => index), (index) => `layer ${keys[index] ?? 0}`);
  const batch = response.meta.batch;
  const itemLabel = (b) => (texts ? texts[b] : response.tokens ? tokensOf(response, b).slice(0, response.meta.lengths ? response.meta.lengths[b] : undefined).join(" ") : `item ${b}`);
  fillSelect($("view-batch"), Array.from({ length: batch }, (_, b) => b), (b) => itemLabel(b).slice(0, 40));
  $("view-batch").parentElement.hidden = batch === 1;
  const kvHeadOf = response.meta.kv_head_of;
  fillSelect($("view-head"), [AVERAGE, ...Array.from({ length: response.meta.num_heads }, (_, h) => h)],
    (h) => (h === AVERAGE ? "average of heads" : kvHeadOf ? `head ${h} (kv head ${kvHeadOf[h]})` : `head ${h}`));
  $("pre-rotary").parentElement.hidden = response.meta.positions !== "rotary";
  $("view-head").value = "0";
  const tokens = Math.max(response.meta.seq, response.meta.seq_kv ?? 0);
  if (tokens > TABLES_OPEN_UP_TO) $("tables-section").open = false;
  $("tables-note").textContent = tokens > TABLES_OPEN_UP_TO ? `(${tokens} tokens: open to build the tables)` : "";
  $("results").hidden = false;
  $("results").classList.remove("stale");
  $("stale-note").hidden = true;
  render();
}

// a failed run: the status says so and results of an earlier run are marked as not matching the form
function showFailure(statusText) {
  $("status").textContent = statusText;
  $("status").classList.add("failed");
  $("results").classList.toggle("stale", state.response !== null);
  $("stale-note").hidden = state.response === null;
}

// a refused or failed fetch: the message next to its field, the status says so
function showFetchProblem(problem) {
  if (problem instanceof ApiRefusal) {
    showApiError(problem.status, problem.payload);
    showFailure(`refused (HTTP ${problem.status}): see the message in red`);
  } else {
    showError("general", `the service could not be reached or its answer not read: ${problem.message}`);
    showFailure("failed: the service could not be reached");
  }
}

async function run(event) {
  event.preventDefault();
  clearErrors();
  $("status").classList.remove("failed");
  let body;
  try {
    body = buildRequest();
  } catch (problem) {
    showError(problem.field || "general", problem.message || String(problem));
    showFailure("not sent: see the message in red");
    return;
  }
  $("run").disabled = true;
  $("status").textContent = "computing…";
  const run = { body, layerKeys: layerKeysOf(body), layers: new Map(), loaded: new Map(), heads: new Map(), internals: new Map() };
  try {
    // a long text gets the summaries view (long-inputs.js), which never asks for an n x n tensor
    const refused = (status, payload) => new ApiRefusal(status, payload);
    if (mode() === "text" && mayBeLong(body) && await showLongInput(body, { layerKeys: run.layerKeys, refused, tracked })) {
      $("results").hidden = true;
      $("status").textContent = "long input: summaries shown";
      return;
    }
    hideLongInput();
    const first = await tracked(fetchTensors(run, run.layerKeys[0], LAYER_TENSORS));
    const layer = layerOf(run.layerKeys[0], first);
    run.loaded.set(0, layer);
    run.layers.set(0, Promise.resolve(layer));
    state.run = run;
    state.request = body;
    $("status").textContent = `${(first.bytes / 1024).toFixed(0)} kB in ${first.meta.elapsed_ms} ms`;
    showResponse({ meta: first.meta, tokens: first.tokens });
  } catch (problem) {
    showFetchProblem(problem);
  } finally {
    $("run").disabled = false;
  }
}

// the whole answer of the run's request as JSON, fetched when asked for
async function downloadJson() {
  const button = $("download-json");
  button.disabled = true;
  try {
    const reply = await tracked(fetch("/attend", {
      method: "POST", headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(state.run.body),
    }));
    if (!reply.ok) throw new ApiRefusal(reply.status, await reply.json().catch(() => ({ detail: reply.statusText })));
    download("attention.json", await reply.blob());
  } catch (problem) {
    showFetchProblem(problem);
  } finally {
    button.disabled = false;
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

// what the downloaded heatmap shows (model, layer, head), its colour scale, and the text it is of
function figureTitle(view) {
  const meta = view.response.meta;
  const what = [meta.model === "toy" ? `toy model (d_model ${meta.d_model}, seed ${meta.seed})`
    : meta.model ? meta.model : "explicit embeddings"];
  if (state.run.layerKeys[0] !== null) what.push(`layer ${view.layer.layer}`);
  what.push(headText(view));
  const colours = sharedScale() ? "colours 0 to 1" : `colours 0 to ${fmt(view.scaleMax)}`;
  const text = state.request && state.request.text;
  const subtitle = Array.isArray(text) ? text[view.batch] : typeof text === "string" ? text : "";
  return { title: [...what, colours].join(" · "), subtitle, fileName: `attention-${what.join("-").replace(/[^A-Za-z0-9._-]+/g, "-")}.png` };
}

function downloadPng() {
  const view = state.view;
  const heatmap = document.createElement("canvas");
  drawHeatmap(heatmap, view.cells, view.layout, { rowLabels: view.queries, colLabels: view.keys });
  const legend = document.createElement("canvas");
  drawLegend(legend, view.scaleMax, { masked: hasMasked(view.matrix) });
  const figure = document.createElement("canvas");
  const { title, subtitle, fileName } = figureTitle(view);
  drawFigure(figure, { title, subtitle, heatmap, legend });
  figure.toBlob(async (blob) => {
    download(fileName, await withText(blob, subtitle ? { Title: title, Description: subtitle } : { Title: title }));
  });
}

function syncForm() {
  const text = mode() === "text";
  document.querySelector(".mode-text").hidden = !text;
  document.querySelector(".mode-json").hidden = text;
  const pretrained = text && !isToy();
  document.querySelectorAll(".not-pretrained").forEach((element) => { element.hidden = pretrained; });
  document.querySelectorAll(".toy-only").forEach((element) => { element.hidden = !(text && isToy()); });
  $("layer").parentElement.hidden = !pretrained;
  const model = selectedModel();
  $("model-about").textContent = text ? modelSummary(model) : "";
  // a decoder is causal whatever the request says: the box shows it, and gets the person's choice back after
  const decoder = pretrained && model !== undefined && model.kind === "decoder";
  const causal = $("causal");
  if (decoder && !causal.disabled) {
    causal.dataset.chosen = String(causal.checked);
    Object.assign(causal, { checked: true, disabled: true });
  } else if (!decoder && causal.disabled) {
    Object.assign(causal, { checked: causal.dataset.chosen === "true", disabled: false });
  }
  $("causal-note").hidden = !decoder;
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
    fillSelect($("model"), listing.models.map((model) => model.name),
      (name) => modelLabel(state.models.find((model) => model.name === name)));
    $("model").value = listing.default;
  } catch (error) {
    showError("model", `GET /models failed: ${error.message}`);
  }
  syncForm();
}

function redrawPictures() {
  if (state.view) drawPictures(state.view);
}

function redrawLinks() {
  if (state.view) drawFocused(state.view);
}

function init() {
  $("json").value = JSON.stringify({ embeddings: [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]], weights: { seed: 0 } });
  $("attend-form").addEventListener("submit", run);
  document.querySelectorAll("input[name=mode]").forEach((input) => input.addEventListener("change", syncForm));
  $("model").addEventListener("change", syncForm);
  for (const id of ["view-layer", "view-head", "view-batch"]) $(id).addEventListener("change", show);
  $("shared-scale").addEventListener("change", redrawPictures);
  $("pre-rotary").addEventListener("change", () => {
    if (!state.view) return;
    renderTables(state.view);
    renderSteps(state.view);
    fetchInternals(state.view);
  });
  $("link-count").addEventListener("change", redrawLinks);
  $("link-min").addEventListener("input", redrawLinks);
  $("heatmap").addEventListener("pointermove", onHeatmapPointer);
  $("heatmap").addEventListener("pointerleave", onHeatmapLeave);
  $("heatmap").addEventListener("click", onHeatmapClick);
  $("links").addEventListener("pointermove", onLinksPointer);
  $("links").addEventListener("pointerleave", onLinksLeave);
  $("download-json").addEventListener("click", downloadJson);
  $("download-png").addEventListener("click", downloadPng);
  $("tables-section").addEventListener("toggle", () => {
    if (state.view && $("tables-section").open && $("tables-section").dataset.built !== "true") {
      renderTables(state.view);
      fetchInternals(state.view);
    }
  });
  initLongInputs();
  loadModels();
}

init();
