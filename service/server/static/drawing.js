// Pictures of attention weights on canvases: the heatmap with its token labels, the colour legend, the
// token-to-token links, and the titled figure that is downloaded as PNG. Pure drawing: every function takes
// numbers and labels and never fetches or reads the form, so it draws the same whichever way the numbers came.
// A Matrix is { rows, cols, values }: values a Float32Array in row-major order, NaN where the entry is masked.

const INK = "#1d232b";
const FOCUS = "#d35400";
const MASKED_RGB = [217, 217, 217];
const LABEL_MARGIN = 90;  // px kept left of and above the cells for token labels
const LABEL_PX_MIN = 10;  // smaller labels are not readable; below it labels are thinned out instead
const LABEL_PX_MAX = 12;

// ---- colours -----------------------------------------------------------------------------------------------

// t in [0, 1] (of the scale's maximum) to white..blue; one ramp for the cells, the small multiples and the legend
export function colourOf(t) {
  const s = t > 1 ? 1 : t > 0 ? t : 0;
  return [Math.round(255 - 224 * s), Math.round(255 - 160 * s), Math.round(255 - 64 * s)];
}

export const css = ([r, g, b]) => `rgb(${r},${g},${b})`;

// the largest finite value (at least a tiny positive number, so that an all-zero matrix divides safely)
export function largestOf(matrix) {
  let largest = 1e-12;
  for (const value of matrix.values) if (value > largest) largest = value;
  return largest;
}

export function hasMasked(matrix) {
  return matrix.values.some(Number.isNaN);
}

// one pixel per cell, coloured on a scale whose darkest colour is scaleMax; drawn scaled up by drawHeatmap
export function cellImage(matrix, scaleMax) {
  const { rows, cols, values } = matrix;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, cols);
  canvas.height = Math.max(1, rows);
  if (rows === 0 || cols === 0) return canvas;
  const context = canvas.getContext("2d");
  const image = context.createImageData(cols, rows);
  const pixels = image.data;
  for (let index = 0; index < values.length; index++) {
    const value = values[index];
    const [r, g, b] = Number.isNaN(value) ? MASKED_RGB : colourOf(value / scaleMax);
    pixels[4 * index] = r;
    pixels[4 * index + 1] = g;
    pixels[4 * index + 2] = b;
    pixels[4 * index + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

// ---- token labels --------------------------------------------------------------------------------------------

// Han, kana, Hangul and full-width forms read upright: such a column label is stacked character by character
// instead of being turned on its side like a Latin word
const UPRIGHT_SCRIPT = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}\p{Script=Bopomofo}\u3000-\u303f\uff00-\uffef]/u;
const graphemes = typeof Intl !== "undefined" && Intl.Segmenter
  ? ((segmenter) => (text) => Array.from(segmenter.segment(text), (part) => part.segment))(new Intl.Segmenter())
  : (text) => Array.from(text);

// in vertical writing the long vowel mark, dashes, waves and ellipses turn with the line
const TURNED_IN_VERTICAL = new Set(["ー", "－", "—", "〜", "～", "…", "‥"]);

function standsUpright(label) {
  return UPRIGHT_SCRIPT.test(label);
}

// Which of `count` positions get a label: every stride-th (all when they fit), but the preferred ones first
// (the focused row, or the keys the focused query attends to) and none closer than stride to a label kept before
function labelledPositions(count, stride, preferred = []) {
  const kept = [];
  const candidates = [...preferred.filter((index) => index >= 0 && index < count)];
  for (let index = 0; index < count; index += stride) candidates.push(index);
  for (const index of candidates) if (kept.every((other) => Math.abs(other - index) >= stride)) kept.push(index);
  return kept.sort((a, b) => a - b);
}

function labelStride(step, fontPx) {
  return Math.max(1, Math.ceil((fontPx + 2) / step));
}

function fontOf(fontPx, bold) {
  return `${bold ? "bold " : ""}${fontPx}px system-ui, sans-serif`;
}

// a column label above x, ending just above `bottom`, reading upwards (Latin) or stacked upright (CJK)
function drawColumnLabel(context, label, x, bottom, room, fontPx) {
  if (!standsUpright(label)) {
    context.save();
    context.translate(x, bottom);
    context.rotate(-Math.PI / 2);
    context.textAlign = "left";
    context.fillText(label, 0, 0, room);
    context.restore();
    return;
  }
  const lineHeight = fontPx + 1;
  const fits = Math.max(1, Math.floor(room / lineHeight));
  let characters = graphemes(label);
  if (characters.length > fits) characters = [...characters.slice(0, fits - 1), "⋮"];
  context.save();
  context.textAlign = "center";
  characters.forEach((character, k) => {
    const y = bottom - (characters.length - k - 0.5) * lineHeight;
    if (!TURNED_IN_VERTICAL.has(character)) {
      context.fillText(character, x, y, lineHeight);
      return;
    }
    context.save();
    context.translate(x, y);
    context.rotate(Math.PI / 2);
    context.fillText(character, 0, 0, lineHeight);
    context.restore();
  });
  context.restore();
}

// ---- the heatmap ---------------------------------------------------------------------------------------------

// Cell size and label room for a rows x cols matrix in a square of about `size` px
export function heatmapLayout(rows, cols, size, labelled) {
  const margin = labelled ? LABEL_MARGIN : 0;
  const cell = Math.max(labelled ? 2 : 1, Math.min(40, Math.floor((size - margin) / Math.max(rows, cols, 1))));
  const fontPx = Math.max(LABEL_PX_MIN, Math.min(LABEL_PX_MAX, cell - 1));
  return { margin, cell, fontPx, stride: labelStride(cell, fontPx), width: margin + cell * cols, height: margin + cell * rows };
}

// The cells (an image from cellImage), the token labels that fit and those of the focused row and column,
// and an outline around the focused row and column. focus: { query, key } or null.
export function drawHeatmap(canvas, cells, layout, { rowLabels = [], colLabels = [], focus = null } = {}) {
  const { margin, cell, fontPx, stride, width, height } = layout;
  const rows = cells.height, cols = cells.width;
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  context.imageSmoothingEnabled = false;
  context.drawImage(cells, margin, margin, cols * cell, rows * cell);
  let labelledRows = [], labelledCols = [];
  if (margin) {
    labelledRows = labelledPositions(rowLabels.length, stride, focus ? [focus.query] : []);
    labelledCols = labelledPositions(colLabels.length, stride, focus ? [focus.key] : []);
    context.textBaseline = "middle";
    for (const i of labelledRows) {
      const focused = focus?.query === i;
      context.font = fontOf(fontPx, focused);
      context.fillStyle = focused ? FOCUS : INK;
      context.textAlign = "right";
      context.fillText(rowLabels[i], margin - 4, margin + (i + 0.5) * cell, margin - 6);
    }
    for (const j of labelledCols) {
      const focused = focus?.key === j;
      context.font = fontOf(fontPx, focused);
      context.fillStyle = focused ? FOCUS : INK;
      drawColumnLabel(context, colLabels[j], margin + (j + 0.5) * cell, margin - 4, margin - 6, fontPx);
    }
  }
  if (focus) {
    context.strokeStyle = FOCUS;
    context.lineWidth = 1;
    context.strokeRect(margin + 0.5, margin + focus.query * cell + 0.5, cols * cell - 1, cell - 1);
    context.strokeRect(margin + focus.key * cell + 0.5, margin + 0.5, cell - 1, rows * cell - 1);
  }
  // the geometry and what is labelled, for tests and other tools
  Object.assign(canvas.dataset, {
    rows, cols, labels: margin, cell, labelFont: fontOf(fontPx, false),
    labelledRows: labelledRows.join(","), labelledCols: labelledCols.join(","),
  });
}

// ---- the legend ----------------------------------------------------------------------------------------------

const LEGEND = { left: 10, top: 4, width: 256, height: 14 };

function tickText(value) {
  if (value === 0) return "0";
  return value >= 0.995 && value <= 1.005 ? "1" : Number(value.toPrecision(2)).toString();
}

// A bar of the colour ramp from 0 to scaleMax with ticks, and a grey swatch for masked cells when there are some
export function drawLegend(canvas, scaleMax, { masked = false } = {}) {
  const { left, top, width, height } = LEGEND;
  canvas.width = left + width + (masked ? 110 : 24);
  canvas.height = top + height + 22;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  for (let x = 0; x < width; x++) {
    context.fillStyle = css(colourOf((x + 0.5) / width));
    context.fillRect(left + x, top, 1, height);
  }
  context.strokeStyle = "#8a949e";
  context.lineWidth = 1;
  context.strokeRect(left - 0.5, top - 0.5, width + 1, height + 1);
  context.fillStyle = INK;
  context.font = fontOf(11, false);
  context.textBaseline = "top";
  for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
    const x = left + fraction * width;
    context.fillRect(Math.round(x) - (fraction === 1 ? 1 : 0), top + height, 1, 4);
    context.textAlign = fraction === 0 ? "left" : fraction === 1 ? "right" : "center";
    context.fillText(tickText(fraction * scaleMax), x, top + height + 6);
  }
  if (masked) {
    const x = left + width + 16;
    context.fillStyle = css(MASKED_RGB);
    context.fillRect(x, top, height, height);
    context.fillStyle = INK;
    context.textAlign = "left";
    context.textBaseline = "middle";
    context.fillText("masked", x + height + 5, top + height / 2);
  }
  Object.assign(canvas.dataset, {
    max: String(scaleMax), barLeft: left, barTop: top, barWidth: width, barHeight: height,
    maskedLeft: masked ? left + width + 16 : "", maskedTop: masked ? top : "", maskedSize: masked ? height : "",
  });
}

// ---- the links -----------------------------------------------------------------------------------------------

// Of one row of weights, the keys whose weight is at least minWeight, the perQuery strongest of them
function strongestLinks(matrix, query, minWeight, perQuery) {
  const links = [];
  for (let key = 0; key < matrix.cols; key++) {
    const weight = matrix.values[query * matrix.cols + key];
    if (weight >= minWeight) links.push({ key, weight });
  }
  links.sort((a, b) => b.weight - a.weight);
  return links.slice(0, perQuery);
}

const LINK_LABEL_ROOM = 110;  // px left of the queries' ends and right of the keys' ends, for their labels
const LINKS_TOP = 5;  // px above the first row
const FOCUS_KEYS_HIGHLIGHTED = 3;  // the focused query's strongest keys, labelled in bold

function linkRowHeight(count) {
  return Math.max(3, Math.min(22, Math.floor(560 / Math.max(count, 1))));
}

// the row (query or key index) at y px from the top of a links canvas drawing `count` rows
export function linkRowAt(y, count) {
  return Math.floor((y - LINKS_TOP) / linkRowHeight(count));
}

// Queries on the left, keys on the right, a line per kept link (thickness and darkness by weight, strongest on
// top); with a focused query its links are drawn over the others, which fade, and its keys are labelled.
// Returns how many links were drawn.
export function drawLinks(canvas, matrix, queries, keys, { minWeight = 0.02, perQuery = Infinity, focusQuery = null } = {}) {
  const rowHeight = linkRowHeight(Math.max(queries.length, keys.length));
  const height = rowHeight * Math.max(queries.length, keys.length) + 2 * LINKS_TOP;
  if (canvas.height !== height) canvas.height = height;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const left = LINK_LABEL_ROOM, right = canvas.width - LINK_LABEL_ROOM;
  const y = (index) => LINKS_TOP + (index + 0.5) * rowHeight;
  const thickest = Math.min(8, rowHeight * 0.6);
  const kept = [];
  for (let query = 0; query < matrix.rows; query++) {
    for (const link of strongestLinks(matrix, query, minWeight, perQuery)) kept.push({ query, ...link });
  }
  const focused = focusQuery === null ? [] : strongestLinks(matrix, focusQuery, minWeight, Infinity);
  kept.sort((a, b) => a.weight - b.weight);
  context.lineCap = "round";
  const fade = focused.length ? 0.3 : 1;
  for (const { query, key, weight } of kept) {
    if (query === focusQuery) continue;
    context.strokeStyle = `rgba(31, 95, 191, ${fade * Math.min(1, 0.15 + weight)})`;
    context.lineWidth = Math.max(0.5, weight * thickest);
    context.beginPath();
    context.moveTo(left, y(query));
    context.lineTo(right, y(key));
    context.stroke();
  }
  for (const { key, weight } of [...focused].reverse()) {
    context.strokeStyle = FOCUS;
    context.globalAlpha = Math.min(1, 0.25 + weight);
    context.lineWidth = Math.max(1, weight * Math.max(thickest, 4));
    context.beginPath();
    context.moveTo(left, y(focusQuery));
    context.lineTo(right, y(key));
    context.stroke();
  }
  context.globalAlpha = 1;
  const fontPx = Math.max(LABEL_PX_MIN, Math.min(LABEL_PX_MAX, rowHeight - 1));
  const stride = labelStride(rowHeight, fontPx);
  const focusKeys = new Set(focused.slice(0, FOCUS_KEYS_HIGHLIGHTED).map((link) => link.key));
  const labelledQueries = labelledPositions(queries.length, stride, focusQuery === null ? [] : [focusQuery]);
  const labelledKeys = labelledPositions(keys.length, stride, focused.map((link) => link.key));
  context.textBaseline = "middle";
  for (const i of labelledQueries) {
    context.font = fontOf(fontPx, i === focusQuery);
    context.fillStyle = i === focusQuery ? FOCUS : INK;
    context.textAlign = "right";
    context.fillText(queries[i], left - 6, y(i), LINK_LABEL_ROOM - 10);
  }
  for (const j of labelledKeys) {
    context.font = fontOf(fontPx, focusKeys.has(j));
    context.fillStyle = focusKeys.has(j) ? FOCUS : INK;
    context.textAlign = "left";
    context.fillText(keys[j], right + 6, y(j), LINK_LABEL_ROOM - 10);
  }
  const drawn = kept.filter((link) => link.query !== focusQuery).length + focused.length;
  Object.assign(canvas.dataset, {
    links: drawn, rowHeight, labelledQueries: labelledQueries.join(","), labelledKeys: labelledKeys.join(","),
  });
  return drawn;
}

// ---- the figure for the PNG ------------------------------------------------------------------------------------

// up to maxLines lines of text that fit `width`, the last one ending in … when the text does not fit
function wrapped(context, text, width, maxLines) {
  const words = text.split(/(\s+)/);
  const lines = [];
  let line = "";
  for (const word of words) {
    const candidate = line + word;
    if (context.measureText(candidate).width <= width || line === "") {
      line = candidate;
    } else {
      lines.push(line.trimEnd());
      line = word.trimStart();
    }
  }
  if (line) lines.push(line);
  if (lines.length <= maxLines) return lines;
  const kept = lines.slice(0, maxLines);
  let last = kept[maxLines - 1];
  while (last.length > 1 && context.measureText(`${last}…`).width > width) last = last.slice(0, -1);
  kept[maxLines - 1] = `${last}…`;
  return kept;
}

// title (bold) and subtitle lines above the heatmap, the legend below it, on white
export function drawFigure(canvas, { title, subtitle, heatmap, legend }) {
  const pad = 12;
  const width = Math.max(heatmap.width, legend.width, 420) + 2 * pad;
  const measure = canvas.getContext("2d");
  measure.font = fontOf(13, false);
  const subtitleLines = subtitle ? wrapped(measure, subtitle, width - 2 * pad, 3) : [];
  const titleHeight = 22 + 17 * subtitleLines.length + 8;
  canvas.width = width;
  canvas.height = titleHeight + heatmap.height + 8 + legend.height + pad;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = INK;
  context.textBaseline = "top";
  context.textAlign = "left";
  context.font = fontOf(15, true);
  context.fillText(title, pad, pad - 2, width - 2 * pad);
  context.font = fontOf(13, false);
  subtitleLines.forEach((line, k) => context.fillText(line, pad, pad + 18 + 17 * k, width - 2 * pad));
  context.drawImage(heatmap, pad, titleHeight);
  context.drawImage(legend, pad, titleHeight + heatmap.height + 8);
  canvas.dataset.titleHeight = titleHeight;
}
