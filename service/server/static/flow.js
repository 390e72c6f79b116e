// "Where information flows": for the first text of the form and its pretrained model, one POST /attend for
// every layer's weights, norms, rollout and value zeroing (API.md, "Across layers"), drawn with drawing.js:
// the rollout as a heatmap and as token links, a head's weights beside its norms (a token that takes much
// weight but moves little shows at a glance), and the value-zeroing map.

import { cellImage, drawHeatmap, drawLegend, drawLinks, heatmapLayout, largestOf } from "./drawing.js";

const $ = (id) => document.getElementById(id);
const INCLUDE = ["weights", "norms", "rollout", "value_zeroing"];
const SIZE = 300;  // px of each heatmap
let answer = null;  // the last answer: { layers: { index: { name: tensor } }, tokens, heads }

// a nested JSON list as { shape, data: Float32Array }
function tensorOf(nested) {
  const shape = [];
  for (let level = nested; Array.isArray(level); level = level[0]) shape.push(level.length);
  return { shape, data: Float32Array.from(nested.flat(shape.length)) };
}

// the [query, key] matrix of text 0 (and head `head` of a tensor with a head axis)
function matrixOf(tensor, head) {
  const [rows, cols] = tensor.shape.slice(-2);
  const offset = tensor.shape.length === 4 ? head * rows * cols : 0;
  return { rows, cols, values: tensor.data.subarray(offset, offset + rows * cols) };
}

function drawMap(id, matrix, tokens) {
  const canvas = $(id);
  const scaleMax = largestOf(matrix);
  drawHeatmap(canvas, cellImage(matrix, scaleMax), heatmapLayout(matrix.rows, matrix.cols, SIZE, true), {
    rowLabels: tokens, colLabels: tokens,
  });
  drawLegend($(`${id}-legend`), scaleMax);
  canvas.dataset.scaleMax = scaleMax;
}

function draw() {
  if (!answer) return;
  const layer = answer.layers[$("flow-layer").value];
  const head = Number($("flow-head").value);
  const tokens = answer.tokens;
  const rollout = matrixOf(layer.rollout);
  drawMap("flow-rollout", rollout, tokens);
  drawLinks($("flow-links"), rollout, tokens, tokens, { perQuery: 3, minWeight: 0.05 });
  drawMap("flow-weights", matrixOf(layer.weights, head), tokens);
  drawMap("flow-norms", matrixOf(layer.norms, head), tokens);
  drawMap("flow-zeroing", matrixOf(layer.value_zeroing), tokens);
  $("flow").dataset.shown = `${$("flow-layer").value},${head}`;
}

function options(select, values) {
  const kept = select.value;
  select.replaceChildren(...values.map((value) => new Option(String(value), String(value))));
  if (values.map(String).includes(kept)) select.value = kept;
}

async function compute() {
  const status = $("flow-status");
  const text = $("text").value.split("\n").map((line) => line.trim()).find((line) => line.length > 0) ?? "";
  const body = { text, model: $("model").value, include: INCLUDE };  // every layer of a model
  status.textContent = "computing…";
  status.classList.remove("failed");
  try {
    const reply = await fetch("/attend", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const payload = await reply.json();
    if (!reply.ok) {
      const detail = Array.isArray(payload.detail) ? payload.detail.map((item) => item.msg).join("; ") : payload.detail;
      throw new Error(`HTTP ${reply.status}: ${detail}`);
    }
    const layers = Object.fromEntries(payload.layers.map((entry) => [
      entry.layer, Object.fromEntries(INCLUDE.map((name) => [name, tensorOf(entry[name])])),
    ]));
    answer = { layers, tokens: payload.tokens[0] };
    options($("flow-layer"), payload.meta.layer);
    options($("flow-head"), Array.from({ length: payload.meta.num_heads }, (_, head) => head));
    $("flow-views").hidden = false;
    draw();
    status.textContent = `done: ${payload.meta.layer.length} layers, ${answer.tokens.length} tokens`;
  } catch (error) {
    status.textContent = String(error.message ?? error);
    status.classList.add("failed");
  }
}

$("flow-run").addEventListener("click", compute);
$("flow-layer").addEventListener("change", draw);
$("flow-head").addEventListener("change", draw);
