// The prediction panel of the explorer, for decoders with their language-model head (GET /models: lm_head
// "causal"): the most probable next tokens after each text; heads ablated by clicking them in the small
// multiples, with the prediction and the viewed layer's heads of the ablated run side by side with the clean
// run's; and greedy generation, with each generated token's attention row over the prompt and the tokens before
// it. It reads the JSON answer of POST /attend (`predictions`, `predictions_clean`, `output_similarity`,
// `meta.prompt_lengths`, `meta.generated`: docs/interventions.md). explorer.js calls the three exported hooks.
import { cellImage, colourOf, css, drawHeatmap, heatmapLayout, largestOf } from "./drawing.js";
import { readableToken } from "./tokens.js";

const $ = (id) => document.getElementById(id);
const JSON_TYPE = "application/json";
const SMALL_MULTIPLE_PX = 120;  // as the explorer's own small multiples, so that the two grids compare

const panel = {
  run: null,               // { body, byteLevel } of the explorer's run, when its model has a causal LM head
  view: null,              // what the explorer shows: { layer, batch, head, clean } (head a number or "average";
                           // clean: the clean run's weights of that layer, [batch, head, query, key])
  ablated: new Map(),      // layer -> Set of heads ablated (zeroed context)
  clean: null,             // the clean prediction's answer (a promise), fetched once per run
  answers: new Map(),      // the ablated answers (promises), by ablations and viewed layer
  generation: null,        // the last generation's answer
};

// ---- requests -------------------------------------------------------------------------------------------------

class Refusal extends Error {}

async function attend(body) {
  const reply = await fetch("/attend", {
    method: "POST", headers: { "content-type": JSON_TYPE, accept: JSON_TYPE }, body: JSON.stringify(body),
  });
  const text = await reply.text();
  let answer;
  try { answer = JSON.parse(text); } catch { answer = { detail: text }; }
  if (!reply.ok) {
    const detail = Array.isArray(answer.detail)
      ? answer.detail.map((item) => `${(item.loc || []).filter((part) => part !== "body").join(".")}: ${item.msg}`).join("; ")
      : typeof answer.detail === "string" ? answer.detail : text;
    throw new Refusal(`HTTP ${reply.status}: ${detail}`);
  }
  return answer;
}

function topK() {
  return Math.max(1, Math.min(50, Number($("predict-top-k").value) || 5));
}

// the interventions of the heads clicked: one zero-ablation per layer
function interventions() {
  return [...panel.ablated].filter(([, heads]) => heads.size > 0).sort(([a], [b]) => a - b)
    .map(([layer, heads]) => ({ ablate: { layer, heads: [...heads].sort((a, b) => a - b), with: "zero" } }));
}

function cleanAnswer() {
  if (!panel.clean) {
    panel.clean = attend({ ...panel.run.body, include: [], predict: { top_k: topK() } });
  }
  return panel.clean;
}

// the ablated run: its prediction (and the clean one), and the weights of the viewed layer under the ablation
function ablatedAnswer(edits, layer) {
  const key = `${JSON.stringify(edits)}|${layer}|${topK()}`;
  if (!panel.answers.has(key)) {
    const body = {
      ...panel.run.body, layer, include: ["weights", "scaled_scores"], predict: { top_k: topK() }, interventions: edits,
    };
    panel.answers.set(key, attend(body).catch((problem) => {
      panel.answers.delete(key);  // asked again next time
      throw problem;
    }));
  }
  return panel.answers.get(key);
}

// ---- drawing ----------------------------------------------------------------------------------------------------

function labelOf(token) {
  return panel.run.byteLevel ? readableToken(token) : token;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" }[c]));
}

// a table of the top tokens of one text (its one predicted position): rank, token, probability with a bar
function predictionTable(predictions, batch, title, kind) {
  const tokens = predictions.top_tokens[batch][0], probs = predictions.top_probs[batch][0];
  const rows = tokens.map((token, rank) => {
    const label = labelOf(token);
    const shown = label === token ? escapeHtml(label) : `${escapeHtml(label)} <small>(${escapeHtml(token)})</small>`;
    return `<tr data-rank="${rank}"><td>${rank + 1}</td><td class="token" data-token="${escapeHtml(token)}">${shown}</td>`
      + `<td class="prob" data-prob="${probs[rank]}">${probs[rank].toFixed(4)}</td>`
      + `<td class="bar"><span data-width="${(100 * probs[rank]).toFixed(1)}%"></span></td></tr>`;
  });
  return `<table class="prediction" data-run="${kind}"><caption>${title}</caption>`
    + `<tr><th>#</th><th>next token</th><th>probability</th><th></th></tr>${rows.join("")}</table>`;
}

function ablationText(edits) {
  return edits.map(({ ablate }) => `layer ${ablate.layer} head${ablate.heads.length > 1 ? "s" : ""} ${ablate.heads.join(", ")}`).join("; ");
}

// the [query][key] weights of one text and head (or the heads' mean) of a JSON layer, masked entries NaN
function matrixOf(layer, batch, head, length) {
  const weights = layer.weights[batch], scaled = layer.scaled_scores[batch];
  const heads = head === "average" ? weights.map((_, h) => h) : [head];
  const values = new Float32Array(length * length);
  for (let i = 0; i < length; i++) {
    for (let j = 0; j < length; j++) {
      const open = heads.filter((h) => scaled[h][i][j] !== null);
      values[i * length + j] = open.length === 0 ? NaN : open.reduce((sum, h) => sum + weights[h][i][j], 0) / heads.length;
    }
  }
  return { rows: length, cols: length, values };
}

function realLength(answer, batch) {
  const lengths = answer.meta.lengths;
  return lengths ? lengths[batch] : answer.tokens[batch].length;
}

// the largest |ablated - clean| weight of one head over the text's real tokens
function largestChange(ablatedRows, clean, batch, head, length) {
  const [, heads, rows, cols] = clean.shape;
  const plane = clean.data.subarray((batch * heads + head) * rows * cols, (batch * heads + head + 1) * rows * cols);
  let largest = 0;
  for (let i = 0; i < length; i++) {
    for (let j = 0; j < length; j++) largest = Math.max(largest, Math.abs(ablatedRows[i][j] - plane[i * cols + j]));
  }
  return largest;
}

function drawAblatedGrid(answer, edits) {
  const { layer: viewed, batch } = panel.view;
  const layer = answer.layers.find((entry) => entry.layer === viewed);
  const first = Math.min(...edits.map(({ ablate }) => ablate.layer));
  $("ablated-grid-caption").textContent = viewed > first
    ? `Layer ${viewed} with ${ablationText(edits)} ablated: compare with the clean heads above`
    : `Layer ${viewed} with ${ablationText(edits)} ablated: the same weights as the clean run's, since an ablation `
      + `changes a head's context after its weights, so only later layers change (pick a later layer above)`;
  const length = realLength(answer, batch);
  const grid = $("ablated-grid");
  grid.replaceChildren();
  layer.weights[batch].forEach((_, h) => {
    const matrix = matrixOf(layer, batch, h, length);
    const change = largestChange(layer.weights[batch][h], panel.view.clean, batch, h, length);
    const figure = document.createElement("figure");
    figure.dataset.head = String(h);
    figure.dataset.change = String(change);
    const canvas = document.createElement("canvas");
    drawHeatmap(canvas, cellImage(matrix, largestOf(matrix)), heatmapLayout(length, length, SMALL_MULTIPLE_PX, false));
    const caption = document.createElement("figcaption");
    caption.textContent = `head ${h}${panel.ablated.get(viewed)?.has(h) ? " (ablated)" : ""}: largest change ${change.toFixed(4)}`;
    figure.append(canvas, caption);
    grid.append(figure);
  });
}

// the clean prediction alone, or side by side with the ablated one, its KL and output similarity
async function showPrediction() {
  const run = panel.run, edits = interventions();
  const view = panel.view;
  $("predict-error").textContent = "";
  $("predict-status").textContent = "computing…";
  $("ablated-list").textContent = edits.length ? `Ablated (context zeroed): ${ablationText(edits)}` : "No head ablated.";
  $("clear-ablations").hidden = edits.length === 0;
  try {
    const answer = edits.length ? await ablatedAnswer(edits, view.layer) : await cleanAnswer();
    if (panel.run !== run || JSON.stringify(interventions()) !== JSON.stringify(edits) || panel.view !== view) return;
    const batch = view.batch;
    const position = answer.meta.predicted_positions[batch][0];
    const after = labelOf(answer.tokens[batch][position]);
    const clean = edits.length ? answer.predictions_clean : answer.predictions;
    const tables = [predictionTable(clean, batch, "clean run", "clean")];
    if (edits.length) {
      const kl = answer.predictions.kl[batch][0];
      const similarity = answer.output_similarity[batch][position];
      tables.push(predictionTable(answer.predictions, batch,
        `with ${escapeHtml(ablationText(edits))} ablated: KL(clean ‖ ablated) ${kl.toFixed(4)} nats, `
        + `output cosine ${similarity.toFixed(4)}`, "ablated"));
      drawAblatedGrid(answer, edits);
    }
    $("prediction-tables").innerHTML = tables.join("");
    // bar widths through the CSSOM: the page's Content-Security-Policy refuses inline style attributes
    for (const bar of $("prediction-tables").querySelectorAll("span[data-width]")) bar.style.width = bar.dataset.width;
    $("ablated-section").hidden = edits.length === 0;
    $("predict-status").textContent = `next token after position ${position} "${after}"`;
    $("predictions").dataset.shown = edits.length ? JSON.stringify(edits) : "clean";
  } catch (problem) {
    if (panel.run !== run) return;
    $("predict-status").textContent = "";
    $("predict-error").textContent = problem instanceof Refusal ? problem.message : `the service could not be reached: ${problem.message}`;
  }
}

// the text with its generated tokens, and each generated token's weights over every token before it
function showGeneration(answer) {
  const { batch, head, layer: viewed } = panel.view;
  const layer = answer.layers.find((entry) => entry.layer === viewed) || answer.layers[0];
  const prompt = answer.meta.prompt_lengths[batch], made = answer.meta.generated[batch];
  const tokens = answer.tokens[batch].slice(0, prompt + made);
  const matrix = matrixOf(layer, batch, head, prompt + made);
  const scaleMax = largestOf(matrix);
  const spans = tokens.map((token, i) => `<span class="${i < prompt ? "prompt" : "generated"}" data-token="${escapeHtml(token)}">${escapeHtml(labelOf(token))}</span>`);
  const header = `<tr><th></th>${tokens.map((token, j) => `<th class="${j < prompt ? "prompt" : "generated"}">${escapeHtml(labelOf(token))}</th>`).join("")}</tr>`;
  const rows = [];
  for (let i = prompt; i < prompt + made; i++) {
    const cells = tokens.map((_, j) => {
      const weight = matrix.values[i * matrix.cols + j];
      if (j > i || Number.isNaN(weight)) return "<td class=\"masked\"></td>";
      return `<td data-weight="${weight}">${weight.toFixed(3)}</td>`;
    });
    rows.push(`<tr data-position="${i}"><th>${escapeHtml(labelOf(tokens[i]))}</th>${cells.join("")}</tr>`);
  }
  const which = head === "average" ? "the average of the heads" : `head ${head}`;
  $("generated-text").innerHTML = spans.join("");
  $("generation-rows").innerHTML = `<caption>Layer ${layer.layer}, ${which}: each generated token's weights over the prompt `
    + `and the tokens generated before it</caption>${header}${rows.join("")}`;
  // colours through the CSSOM: the page's Content-Security-Policy refuses inline style attributes
  for (const cell of $("generation-rows").querySelectorAll("td[data-weight]")) {
    cell.style.background = css(colourOf(Number(cell.dataset.weight) / scaleMax));
  }
  $("generate-status").textContent = `${made} token${made === 1 ? "" : "s"} generated`
    + (made < Number($("generate-count").value) ? " (stopped at the end-of-text token)" : "");
}

async function generate() {
  const run = panel.run, view = panel.view;
  const button = $("generate");
  button.disabled = true;
  $("generate-error").textContent = "";
  $("generate-status").textContent = "generating…";
  try {
    const body = {
      ...run.body, layer: view.layer, include: ["weights", "scaled_scores"],
      generate: { max_new_tokens: Number($("generate-count").value) },
    };
    const answer = await attend(body);
    if (panel.run !== run) return;
    panel.generation = answer;
    showGeneration(answer);
  } catch (problem) {
    $("generate-status").textContent = "";
    $("generate-error").textContent = problem instanceof Refusal ? problem.message : `the service could not be reached: ${problem.message}`;
  } finally {
    button.disabled = false;
  }
}

// ---- hooks for explorer.js ----------------------------------------------------------------------------------------

// After a run: the panel for a decoder with its LM head (model: the GET /models entry), else hidden.
// byteLevel: whether the run's tokens are byte-level BPE (tokens.js), so that predicted tokens read as text.
export function startPredictions(body, model, byteLevel) {
  const shown = model !== undefined && model.lm_head === "causal" && "text" in body;
  $("predictions").hidden = !shown;
  panel.run = shown ? { body, byteLevel } : null;
  panel.ablated = new Map();
  panel.clean = null;
  panel.answers = new Map();
  panel.generation = null;
  panel.view = null;
  $("prediction-tables").replaceChildren();
  $("generated-text").replaceChildren();
  $("generation-rows").replaceChildren();
  $("generate-status").textContent = "";
  $("ablated-section").hidden = true;
}

// The explorer has drawn its small multiples of `drawn` (a layer of its run: { layer, weights }, the weights as
// {shape, data} [batch, head, query, key]) for text `batch` and `head`: mark the ablated heads, and show the
// prediction (and the layer under the ablation, with each head's change) for this view.
export function headsDrawn(grid, drawn, batch, head) {
  if (!panel.run) return;
  const layer = drawn.layer;
  for (const figure of grid.querySelectorAll("figure[data-head]")) {
    figure.classList.toggle("ablated", panel.ablated.get(layer)?.has(Number(figure.dataset.head)) === true);
  }
  const view = panel.view;
  if (view && view.layer === layer && view.batch === batch && view.head === head) return;
  panel.view = { layer, batch, head, clean: drawn.weights };
  showPrediction();
  if (panel.generation) showGeneration(panel.generation);
}

// A click on head `head` of `layer` in the small multiples: with "click to ablate" ticked it toggles the head's
// ablation and answers true (the explorer then does not select the head).
export function headClicked(layer, head) {
  if (!panel.run || !$("ablate-on-click").checked) return false;
  const heads = panel.ablated.get(layer) || new Set();
  if (heads.has(head)) heads.delete(head);
  else heads.add(head);
  panel.ablated.set(layer, heads);
  for (const figure of $("grid").querySelectorAll("figure[data-head]")) {
    figure.classList.toggle("ablated", heads.has(Number(figure.dataset.head)));
  }
  showPrediction();
  return true;
}

function init() {
  $("generate").addEventListener("click", generate);
  $("clear-ablations").addEventListener("click", () => {
    panel.ablated = new Map();
    $("grid").querySelectorAll("figure.ablated").forEach((figure) => figure.classList.remove("ablated"));
    showPrediction();
  });
  $("predict-top-k").addEventListener("change", () => {
    if (!panel.run) return;
    panel.clean = null;
    showPrediction();
  });
}

init();
