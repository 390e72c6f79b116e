// Sentences about a model (from GET /models) and about the layer and head on screen (from the answer's meta):
// what the model is, which keys each query may see (causal, sliding window, soft-cap), which query heads share
// a key/value head. Pure text: no fetching, no drawing.

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// "4–7" for consecutive numbers, "0, 2, 5" otherwise
export function spanOf(numbers) {
  if (numbers.length === 0) return "none";
  const consecutive = numbers.every((number, k) => number === numbers[0] + k);
  if (consecutive && numbers.length > 1) return `${numbers[0]}–${numbers[numbers.length - 1]}`;
  return numbers.join(", ");
}

// the option text of a model in the picker: name, family, encoder or decoder, positions
export function modelLabel(model) {
  if (model.toy) return `${model.name} (seeded embeddings)`;
  const what = [model.family, model.kind].filter(Boolean).join(" ");
  const positions = model.positions ? `${model.positions} positions` : "";
  const about = [what, positions].filter(Boolean).join(", ");
  return about ? `${model.name} — ${about}` : model.name;
}

// one line about a model: its architecture as GET /models gives it
export function modelSummary(model) {
  if (!model) return "";
  if (model.toy) return model.about ? `toy mode: ${model.about}` : "toy mode";
  const parts = [];
  if (model.family) parts.push(`${model.family} ${model.kind ?? ""}`.trim());
  if (model.positions) parts.push(`${model.positions} positions`);
  if (model.layers) parts.push(plural(model.layers, "layer"));
  if (model.heads) {
    const kv = model.kv_heads && model.kv_heads !== model.heads ? ` sharing ${plural(model.kv_heads, "kv head")}` : "";
    parts.push(`${plural(model.heads, "head")}${kv}${model.head_size ? ` of size ${model.head_size}` : ""}`);
  }
  if (model.window) {
    const layers = model.windowed_layers || [];
    const which = model.layers && layers.length === model.layers ? "every layer" : `layers ${spanOf(layers)}`;
    parts.push(`sliding window ${model.window} (${which})`);
  }
  if (model.softcap) parts.push(`scores soft-capped at ${model.softcap}`);
  if (model.max_length) parts.push(`up to ${model.max_length} tokens`);
  if (model.parameters) parts.push(`${(model.parameters / 1e6).toPrecision(3)} M parameters`);
  if (model.dtype) parts.push(model.dtype);
  if (model.loaded === false) parts.push("loaded on first use");
  return parts.join(" · ");
}

// Which keys a query of this layer may see and how its scores are capped, from the meta of an answer for
// this one layer: e.g. "causal, sliding window 4: each query sees itself and the 3 keys before it".
// `masked`: whether the view has masked cells (without causality or a window: the request's attention_mask)
export function maskCaption(meta, masked = false) {
  const window = meta.sliding_window ? meta.sliding_window[0] : null;
  let sentence;
  if (meta.causal && window) {
    sentence = `causal, sliding window ${window}: each query sees itself and the ${plural(window - 1, "key")} before it`;
  } else if (meta.causal) {
    sentence = "causal: each query sees itself and every key before it";
  } else if (window) {
    const half = Math.floor(window / 2);
    sentence = `sliding window ${window}: each query sees itself and the ${plural(half, "key")} either side of it`;
  } else if (masked) {
    sentence = "not causal, no window: keys masked by attention_mask";
  } else {
    sentence = "not causal, no window: each query may see every key";
  }
  if (meta.softcap) sentence += `; scores soft-capped at ${meta.softcap}: ${meta.softcap}·tanh(s / ${meta.softcap}) before the softmax`;
  return sentence;
}

// the query heads that read kv head `group`
function headsOf(kvHeadOf, group) {
  return kvHeadOf.flatMap((kv, head) => (kv === group ? [head] : []));
}

// Under grouped-query attention, which kv head a query head reads and who shares it ("head 5 reads kv head 1,
// shared with heads 4–7"); for the average of the heads, every group. Empty without grouped-query attention.
export function kvSharing(kvHeadOf, head) {
  if (!kvHeadOf) return "";
  if (head === null) {
    const groups = [...new Set(kvHeadOf)].map((group) => `heads ${spanOf(headsOf(kvHeadOf, group))} read kv head ${group}`);
    return `${plural(kvHeadOf.length, "query head")} share ${plural(new Set(kvHeadOf).size, "kv head")}: ${groups.join("; ")}`;
  }
  const group = kvHeadOf[head];
  return `head ${head} reads kv head ${group}, shared with heads ${spanOf(headsOf(kvHeadOf, group))}`;
}
