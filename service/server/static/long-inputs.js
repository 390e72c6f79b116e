// The view for long inputs (from LONG_FROM tokens): it never asks for an n x n tensor, only the service's
// summaries (docs/summaries.md). One request brings every layer's pooled map, entropy and head scores; the page
// draws the pooled map of a head (or the mean of the heads) with token labels, a layers x heads table of each
// score (click a cell to open that head), and, for a window of rows picked on the map (click or drag), each
// query's top keys at full resolution, fetched with `queries`.
import { cellImage, drawHeatmap, drawLegend, heatmapLayout, largestOf } from "./drawing.js";
import { readSafetensors } from "./safetensors.js";
import { readableTokens } from "./tokens.js";

export const LONG_FROM = 384;          // tokens: from here on the page shows summaries instead of weights
const WORDS_WORTH_ASKING = 250;        // a text of fewer words is sent as before (tokens are at least words)
const OVERVIEW = ["pooled_weights", "entropy", "previous_token_score", "duplicate_token_score", "induction_score", "sink_score"];
const WINDOW_NAMES = ["top_keys", "top_weights", "entropy"];
const WINDOW_ROWS = 32;                // rows opened by a click
const WINDOW_MAX_ROWS = 256;           // and at most by a drag
const WINDOW_TOP_K = 8;
const MAP_SIZE = 620;
const AVERAGE = "average";
export const SCORES = [
  ["previous_token_score", "previous token"], ["duplicate_token_score", "duplicate token"],
  ["induction_score", "induction"], ["sink_score", "sink (key 0)"], ["mean_entropy", "mean entropy (nats)"],
];

const $ = (id) => document.getElementById(id);
const long = { run: null, view: null, drag: null };

// whether a request may be long enough for this view: a text (one or more) of many words
export function mayBeLong(body) {
  const texts = typeof body.text === "string" ? [body.text] : Array.isArray(body.text) ? body.text : [];
  return texts.some((text) => text.split(/\s+/).length >= WORDS_WORTH_ASKING);
}

// POST /attend as safetensors; `refused(status, payload)` makes the error the explorer shows next to its field
async function attend(body, refused) {
  const reply = await fetch("/attend", {
    method: "POST", headers: { "content-type": "application/json", accept: "application/x-safetensors" },
    body: JSON.stringify(body),
  });
  if (!reply.ok) {
    const text = await reply.text();
    let payload;
    try { payload = JSON.parse(text); } catch { payload = { detail: text }; }
    throw refused(reply.status, payload);
  }
  const { metadata, tensors } = readSafetensors(await reply.arrayBuffer());
  return { meta: JSON.parse(metadata.meta), tokens: metadata.tokens ? JSON.parse(metadata.tokens) : null, tensors };
}

// The overview of `body` (every layer's summaries). Returns false, having drawn nothing, when the text turns out
// shorter than LONG_FROM tokens: the explorer then runs as for any input.
export async function showLongInput(body, { layerKeys, refused, tracked }) {
  const request = { ...body, include: OVERVIEW };
  const answer = await tracked(attend(request, refused));
  const arrived = performance.now();
  const seq = Math.max(answer.meta.seq, answer.meta.seq_kv ?? 0);
  if (seq < LONG_FROM) return false;
  const texts = typeof body.text === "string" ? [body.text] : body.text;
  const labels = readableTokens(answer.tokens, answer.meta.lengths, texts);
  const layers = layerKeys.map((key) => {
    const prefix = key === null ? "" : `layers.${key}.`;
    return { key, ...Object.fromEntries(OVERVIEW.map((name) => [name, answer.tensors[prefix + name]])) };
  });
  long.run = { body, meta: answer.meta, tokens: answer.tokens, labels, layers, windows: new Map(), refused, tracked };
  long.view = { layer: 0, head: AVERAGE, batch: 0, window: null };
  fillControls();
  $("long-view").hidden = false;
  draw();
  // the time from the answer's arrival to the first frame with the map on screen, for the tests and the docs
  requestAnimationFrame(() => setTimeout(() => {
    $("long-view").dataset.firstDrawMs = (performance.now() - arrived).toFixed(1);
  }));
  return true;
}

export function hideLongInput() {
  $("long-view").hidden = true;
  long.run = null;
}

function fillControls() {
  const { meta, layers } = long.run;
  const fill = (select, values, label) => select.replaceChildren(...values.map((v) => new Option(label(v), String(v))));
  fill($("long-layer"), layers.map((_, index) => index), (index) => `layer ${layers[index].key ?? 0}`);
  fill($("long-head"), [AVERAGE, ...Array.from({ length: meta.num_heads }, (_, h) => h)],
    (h) => (h === AVERAGE ? "mean of the heads" : `head ${h}`));
  fill($("long-batch"), Array.from({ length: meta.batch }, (_, b) => b), (b) => `text ${b + 1}`);
  $("long-batch").parentElement.hidden = meta.batch === 1;
}

// the real tokens of the selected text
function lengthOf(batch) {
  const meta = long.run.meta;
  return meta.lengths ? meta.lengths[batch] : meta.seq;
}

// one head's (or the heads' mean) [query_block][key_block] pooled map of the selected layer and text
function pooledMatrix(layer, batch, head) {
  const tensor = layer.pooled_weights;
  const [, heads, rows, cols] = tensor.shape;
  const chosen = head === AVERAGE ? Array.from({ length: heads }, (_, h) => h) : [head];
  const values = new Float32Array(rows * cols);
  for (const h of chosen) {
    const plane = tensor.data.subarray((batch * heads + h) * rows * cols, (batch * heads + h + 1) * rows * cols);
    for (let index = 0; index < values.length; index++) values[index] += plane[index] / chosen.length;
  }
  return { rows, cols, values };
}

// the mean over the real queries of one head's entropy
function meanEntropy(layer, batch, head) {
  const [, heads, seq] = layer.entropy.shape;
  const length = lengthOf(batch);
  const row = layer.entropy.data.subarray((batch * heads + head) * seq, (batch * heads + head) * seq + length);
  return row.reduce((sum, value) => sum + value, 0) / length;
}

// the score `name` of (layer, head) for the selected text
export function scoreOf(layer, name, batch, head) {
  if (name === "mean_entropy") return meanEntropy(layer, batch, head);
  const tensor = layer[name];
  return tensor.data[batch * tensor.shape[1] + head];
}

function tokenLabel(position) {
  return long.run.labels[long.view.batch][position];
}

function draw() {
  const view = long.view, run = long.run;
  view.batch = Number($("long-batch").value);
  view.layer = Number($("long-layer").value);
  const headValue = $("long-head").value;
  view.head = headValue === AVERAGE ? AVERAGE : Number(headValue);
  const layer = run.layers[view.layer];
  const pool = run.meta.pool, length = lengthOf(view.batch);
  const matrix = pooledMatrix(layer, view.batch, view.head);
  const scaleMax = largestOf(matrix);
  const blockLabels = (count) => Array.from({ length: count }, (_, block) => {
    const at = block * pool;
    return at < length ? `${at} ${tokenLabel(at)}` : "";
  });
  const layout = heatmapLayout(matrix.rows, matrix.cols, MAP_SIZE, true);
  view.layout = layout;
  view.matrix = matrix;
  const canvas = $("long-map");
  drawHeatmap(canvas, cellImage(matrix, scaleMax), layout,
    { rowLabels: blockLabels(matrix.rows), colLabels: blockLabels(matrix.cols) });
  canvas.dataset.pool = String(pool);
  if (view.window) markWindow(canvas, layout, view.window, pool);
  drawLegend($("long-legend"), scaleMax);
  const who = view.head === AVERAGE ? "the mean of the heads" : `head ${view.head}`;
  $("long-caption").textContent = `${length} tokens, layer ${layer.key ?? 0}, ${who}: each cell is the mean weight `
    + `of a block of ${pool} queries x ${pool} keys (labels: the position and token starting the block). `
    + "Click a row of blocks to open its queries, or drag over rows to open several.";
  drawScoreTables();
  drawWindow();
}

// an outline around the rows of the open window
function markWindow(canvas, layout, window, pool) {
  const context = canvas.getContext("2d");
  const { margin, cell } = layout;
  const top = margin + (window.start / pool) * cell, bottom = margin + (window.end / pool) * cell;
  context.strokeStyle = "#d35400";
  context.lineWidth = 2;
  context.strokeRect(margin + 1, top, canvas.width - margin - 2, Math.max(2, bottom - top));
}

// a layers x heads table per score; a cell opens its head
function drawScoreTables() {
  const run = long.run, view = long.view;
  const heads = run.meta.num_heads;
  const parts = [];
  for (const [name, title] of SCORES) {
    const values = run.layers.map((layer) => Array.from({ length: heads }, (_, h) => scoreOf(layer, name, view.batch, h)));
    const top = Math.max(1e-9, ...values.flat());
    const header = `<tr><th></th>${Array.from({ length: heads }, (_, h) => `<th>h${h}</th>`).join("")}</tr>`;
    const rows = values.map((row, index) => `<tr><th>L${run.layers[index].key ?? 0}</th>${row.map((value, h) => {
      const shade = Math.round(255 - 150 * (value / top));
      const chosen = index === view.layer && h === view.head ? " class=\"chosen\"" : "";
      return `<td data-layer="${index}" data-head="${h}" data-value="${value}" data-shade="${shade}"${chosen}>`
        + `${short(value)}</td>`;
    }).join("")}</tr>`);
    parts.push(`<table class="long-scores" data-score="${name}"><caption>${title}</caption>${header}${rows.join("")}</table>`);
  }
  $("long-scores").innerHTML = parts.join("");
  // the page's Content-Security-Policy refuses inline style attributes; the CSSOM is allowed
  for (const cell of $("long-scores").querySelectorAll("td[data-shade]")) {
    const shade = cell.dataset.shade;
    cell.style.background = `rgb(${shade},${shade},255)`;
  }
}

function openHead(event) {
  const cell = event.target.closest("td[data-head]");
  if (!cell) return;
  $("long-layer").value = cell.dataset.layer;
  $("long-head").value = cell.dataset.head;
  draw();
  fetchWindow();
}

// ---- the window of rows at full resolution ------------------------------------------------------------------------

function blockAt(event) {
  const canvas = $("long-map"), { margin, cell } = long.view.layout;
  const y = event.clientY - canvas.getBoundingClientRect().top - canvas.clientTop - margin;
  const block = Math.floor(y / cell);
  return block >= 0 && block < long.view.matrix.rows ? block : null;
}

function onPointerDown(event) {
  if (!long.run) return;
  const block = blockAt(event);
  if (block !== null) long.drag = block;
}

function onPointerUp(event) {
  if (!long.run || long.drag === null) return;
  const first = long.drag, last = blockAt(event) ?? first;
  long.drag = null;
  openRows(Math.min(first, last) * long.run.meta.pool, (Math.max(first, last) + 1) * long.run.meta.pool);
}

// opens the queries start..end-1 (a click: WINDOW_ROWS of them from the block's first)
export function openRows(start, end) {
  const length = lengthOf(long.view.batch);
  const clickEnd = end - start <= long.run.meta.pool ? start + WINDOW_ROWS : end;
  const stop = Math.min(length, clickEnd, start + WINDOW_MAX_ROWS);
  long.view.window = { start, end: stop };
  draw();
  fetchWindow();
}

// the window's head: the selected one (head 0 under the mean of the heads, whose top keys are not a summary)
function windowHead() {
  return long.view.head === AVERAGE ? 0 : long.view.head;
}

function fetchWindow() {
  const run = long.run, view = long.view;
  if (!view.window) return;
  const { start, end } = view.window;
  const layer = run.layers[view.layer], head = windowHead();
  const key = `${view.layer}/${head}/${start}/${end}`;
  if (run.windows.has(key)) {
    drawWindow();
    return;
  }
  const body = { ...run.body, include: WINDOW_NAMES, heads: [head], top_k: WINDOW_TOP_K,
    queries: Array.from({ length: end - start }, (_, i) => start + i) };
  if (layer.key !== null) body.layer = layer.key;
  const loading = run.tracked(attend(body, run.refused)).then((answer) => {
    const prefix = layer.key === null ? "" : `layers.${layer.key}.`;
    run.windows.set(key, Object.fromEntries(WINDOW_NAMES.map((name) => [name, answer.tensors[prefix + name]])));
    if (long.run === run) drawWindow();
  }, (problem) => {
    $("long-window-note").textContent = `could not fetch the rows: ${problem.message}`;
  });
  run.windows.set(key, null);
  return loading;
}

function drawWindow() {
  const run = long.run, view = long.view, note = $("long-window-note");
  const canvas = $("long-rows"), list = $("long-top-keys");
  if (!view.window) {
    note.textContent = "No rows open yet.";
    list.replaceChildren();
    return;
  }
  const { start, end } = view.window, head = windowHead();
  const rows = run.windows.get(`${view.layer}/${head}/${start}/${end}`);
  const about = `Queries ${start}–${end - 1} of layer ${run.layers[view.layer].key ?? 0}, head ${head}`
    + (view.head === AVERAGE ? " (pick a head for its rows)" : "");
  if (!rows) {
    note.textContent = `${about}: fetching…`;
    return;
  }
  note.textContent = `${about}: each row's ${rows.top_keys.shape[3]} strongest keys at their positions`;
  drawRows(canvas, rows, start, end);
  list.innerHTML = topKeysTable(rows, start, end);
}

// one band per query, keys from 0 to the last one any row's top keys reach (a decoder's rows see only earlier
// keys); a mark at each top key's position, darker for a larger weight; the key axis ticked below
function drawRows(canvas, rows, start, end) {
  const count = end - start, rank = rows.top_keys.shape[3];
  const batchOffset = long.view.batch * count * rank;
  const keys = rows.top_keys.data.subarray(batchOffset, batchOffset + count * rank);
  const extent = Math.max(end, ...Array.from(keys, Number).map((key) => key + 1));
  const width = MAP_SIZE, axis = 16, band = Math.max(2, Math.min(12, Math.floor(400 / count)));
  canvas.width = width;
  canvas.height = band * count + axis;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, canvas.height);
  for (let i = 0; i < count; i++) {
    for (let r = rank - 1; r >= 0; r--) {
      const keyPos = Number(keys[i * rank + r]);
      const weight = rows.top_weights.data[batchOffset + i * rank + r];
      if (weight <= 0) continue;
      const shade = Math.round(220 * (1 - Math.min(1, weight)));
      context.fillStyle = `rgb(${shade},${shade},255)`;
      context.fillRect(Math.floor((keyPos / extent) * width), i * band, Math.max(2, width / extent), band);
    }
  }
  context.fillStyle = "#1d232b";
  context.font = "11px system-ui, sans-serif";
  context.textBaseline = "top";
  for (let tick = 0; tick <= 4; tick++) {
    const key = Math.round((tick / 4) * (extent - 1));
    context.textAlign = tick === 0 ? "left" : tick === 4 ? "right" : "center";
    context.fillText(`key ${key}`, (tick / 4) * width, band * count + 3);
  }
  Object.assign(canvas.dataset, { start, end, band, extent });
}

// a weight or score in a few characters: 3 decimals, or 2 significant digits when that would read 0.000
function short(value) {
  return value === 0 || Math.abs(value) >= 0.001 ? value.toFixed(3) : value.toExponential(1);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" }[c]));
}

function topKeysTable(rows, start, end) {
  const rank = rows.top_keys.shape[3], count = end - start, batchOffset = long.view.batch * count * rank;
  const lines = [];
  for (let i = 0; i < count; i++) {
    const keys = [];
    for (let r = 0; r < rank; r++) {
      const keyPos = Number(rows.top_keys.data[batchOffset + i * rank + r]);
      const weight = rows.top_weights.data[batchOffset + i * rank + r];
      if (weight <= 0) continue;
      keys.push(`<span class="top-key" data-key="${keyPos}" data-weight="${weight}">${keyPos} ${escapeHtml(tokenLabel(keyPos))} `
        + `<small>${short(weight)}</small></span>`);
    }
    const entropy = rows.entropy.data[long.view.batch * count + i];
    lines.push(`<tr data-query="${start + i}"><th>${start + i} ${escapeHtml(tokenLabel(start + i))}</th>`
      + `<td>${entropy.toFixed(2)}</td><td class="keys">${keys.join(" ")}</td></tr>`);
  }
  return `<table id="long-top-keys-table"><tr><th>query</th><th>entropy</th><th>top keys (weight)</th></tr>${lines.join("")}</table>`;
}

function onMapPointer(event) {
  if (!long.run) return;
  const canvas = $("long-map"), { margin, cell } = long.view.layout;
  const rect = canvas.getBoundingClientRect();
  const i = Math.floor((event.clientY - rect.top - canvas.clientTop - margin) / cell);
  const j = Math.floor((event.clientX - rect.left - canvas.clientLeft - margin) / cell);
  const { rows, cols, values } = long.view.matrix, pool = long.run.meta.pool;
  if (i < 0 || j < 0 || i >= rows || j >= cols) {
    $("long-hover").textContent = "Point at a block";
    return;
  }
  $("long-hover").textContent = `queries ${i * pool}–${(i + 1) * pool - 1} ("${tokenLabel(i * pool)}"…) → `
    + `keys ${j * pool}–${(j + 1) * pool - 1} ("${tokenLabel(Math.min(j * pool, lengthOf(long.view.batch) - 1))}"…): `
    + `mean weight ${values[i * cols + j].toPrecision(6)}`;
}

export function initLongInputs() {
  for (const id of ["long-layer", "long-head", "long-batch"]) {
    $(id).addEventListener("change", () => {
      draw();
      fetchWindow();
    });
  }
  $("long-scores").addEventListener("click", openHead);
  $("long-map").addEventListener("pointerdown", onPointerDown);
  $("long-map").addEventListener("pointerup", onPointerUp);
  $("long-map").addEventListener("pointermove", onMapPointer);
}
