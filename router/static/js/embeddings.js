// The embeddings tab: embed two or more texts and show their cosine similarities.

import { apiJson } from "./api.js";
import { describeError, el, fillModelSelect, rememberChoice, seconds, setStatus } from "./ui.js";

const MODEL_CHOICE = "modelyard.embeddings.model";
const STARTING_TEXTS = [
  "The cat sits on the mat.",
  "A kitten is resting on a rug.",
  "Quarterly revenue grew by eight percent.",
];

const $ = (id) => document.getElementById(id);
let usable = false;

function textAreas() {
  return [...$("emb-texts").querySelectorAll("textarea")];
}

function renumber() {
  const rows = [...$("emb-texts").children];
  rows.forEach((row, index) => {
    const label = row.querySelector("label");
    const area = row.querySelector("textarea");
    const remove = row.querySelector("button");
    area.id = `emb-text-${index + 1}`;
    label.htmlFor = area.id;
    label.textContent = `Text ${index + 1}`;
    remove.setAttribute("aria-label", `Remove text ${index + 1}`);
    remove.disabled = !usable || rows.length <= 2;
  });
}

function addText(value = "") {
  const area = el("textarea", { rows: "2" });
  area.value = value;
  const row = el(
    "div",
    { className: "emb-row" },
    el("label", {}),
    area,
    el("button", {
      type: "button",
      className: "emb-remove",
      text: "Remove",
      onclick: () => {
        row.remove();
        renumber();
      },
    }),
  );
  $("emb-texts").append(row);
  renumber();
  return area;
}

export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

function cellColour(value) {
  // 0 → transparent, 1 → the accent colour; negative values in a warm tone.
  const strength = Math.min(1, Math.abs(value));
  return value >= 0
    ? `color-mix(in srgb, var(--accent) ${Math.round(strength * 55)}%, transparent)`
    : `color-mix(in srgb, var(--danger) ${Math.round(strength * 45)}%, transparent)`;
}

function showResult(texts, vectors, response, took) {
  const n = texts.length;
  const matrix = vectors.map((a) => vectors.map((b) => cosine(a, b)));
  const result = $("emb-result");
  result.replaceChildren();

  let best = null;
  for (let i = 0; i < n; i += 1) {
    for (let j = i + 1; j < n; j += 1) {
      if (!best || matrix[i][j] > best.value) best = { i, j, value: matrix[i][j] };
    }
  }
  const headline =
    n === 2
      ? `Cosine similarity of text 1 and text 2: ${matrix[0][1].toFixed(3)}`
      : `Most similar: text ${best.i + 1} and text ${best.j + 1} (${best.value.toFixed(3)})`;
  result.append(el("p", { className: "headline", id: "emb-headline", text: headline }));

  const head = el("tr", {}, el("td", {}));
  texts.forEach((_, j) => head.append(el("th", { scope: "col", text: `Text ${j + 1}` })));
  const rows = matrix.map((row, i) => {
    const tr = el("tr", {}, el("th", { scope: "row", title: texts[i], text: `Text ${i + 1}` }));
    row.forEach((value, j) => {
      const cell = el("td", { className: "sim", text: value.toFixed(3), title: `text ${i + 1} · text ${j + 1}` });
      cell.dataset.i = String(i);
      cell.dataset.j = String(j);
      cell.style.background = cellColour(value);
      tr.append(cell);
    });
    return tr;
  });
  result.append(
    el(
      "div",
      { className: "table-scroll" },
      el(
        "table",
        { className: "similarity", id: "emb-table" },
        el("caption", { text: "Cosine similarity of every pair of texts" }),
        el("thead", {}, head),
        el("tbody", {}, ...rows),
      ),
    ),
  );
  const legend = el("ol", { className: "emb-legend" });
  texts.forEach((text) => legend.append(el("li", { text })));
  result.append(legend);
  const tokens = response.usage ? ` · ${response.usage.prompt_tokens} tokens` : "";
  result.append(
    el("p", { className: "meta", text: `${response.model} · ${vectors[0].length} dimensions${tokens} · ${took}` }),
  );
}

async function compare() {
  const status = $("emb-status");
  const texts = textAreas()
    .map((area) => area.value.trim())
    .filter(Boolean);
  if (texts.length < 2) {
    setStatus(status, "Enter at least two texts to compare.", "error");
    return;
  }
  const model = $("emb-model").value;
  const started = performance.now();
  setStatus(status, "Embedding…", "busy");
  $("emb-run").disabled = true;
  try {
    const response = await apiJson("/v1/embeddings", { method: "POST", body: { model, input: texts } });
    const vectors = [...response.data].sort((a, b) => a.index - b.index).map((d) => d.embedding);
    showResult(texts, vectors, response, seconds(started));
    setStatus(status, "");
  } catch (error) {
    setStatus(status, describeError(error), "error");
  } finally {
    $("emb-run").disabled = !usable;
  }
}

export function init() {
  for (const text of STARTING_TEXTS) addText(text);
  $("emb-add").addEventListener("click", () => addText().focus());
  $("emb-form").addEventListener("submit", (event) => {
    event.preventDefault();
    compare();
  });
  rememberChoice($("emb-model"), MODEL_CHOICE);
}

export function setModels(models) {
  usable = fillModelSelect({
    select: $("emb-model"),
    note: $("emb-no-model"),
    form: $("emb-form"),
    models,
    what: "embeddings",
    storageKey: MODEL_CHOICE,
  });
  renumber();
}
