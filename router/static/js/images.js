// The images tab: a prompt → POST /v1/images/generations (b64_json) → images.

import { apiJson } from "./api.js";
import { describeError, el, fillModelSelect, rememberChoice, seconds, setStatus } from "./ui.js";

const MODEL_CHOICE = "modelyard.images.model";
const $ = (id) => document.getElementById(id);
let usable = false;
let running = null; // AbortController of the request in flight

function optionalInt(id) {
  const raw = $(id).value.trim();
  if (!raw) return undefined;
  const value = Number(raw);
  return Number.isInteger(value) ? value : undefined;
}

async function generate() {
  const status = $("img-status");
  const prompt = $("img-prompt").value.trim();
  if (!prompt) {
    setStatus(status, "Enter a prompt.", "error");
    return;
  }
  const body = { model: $("img-model").value, prompt, response_format: "b64_json" };
  const n = optionalInt("img-n");
  if (n !== undefined) body.n = n;
  if ($("img-size").value) body.size = $("img-size").value;
  const negative = $("img-negative").value.trim();
  if (negative) body.negative_prompt = negative;
  const steps = optionalInt("img-steps");
  if (steps !== undefined) body.num_inference_steps = steps;
  const seed = optionalInt("img-seed");
  if (seed !== undefined) body.seed = seed;

  running = new AbortController();
  const button = $("img-run");
  button.textContent = "Cancel";
  button.classList.remove("primary");
  const started = performance.now();
  const ticker = setInterval(() => setStatus(status, `Generating… ${seconds(started)}`, "busy"), 250);
  setStatus(status, "Generating…", "busy");
  try {
    const response = await apiJson("/v1/images/generations", { method: "POST", body, signal: running.signal });
    clearInterval(ticker);
    const format = response.output_format || "png";
    const result = $("img-result");
    result.replaceChildren();
    response.data.forEach((image, index) => {
      const source = `data:image/${format};base64,${image.b64_json}`;
      const name = `modelyard-${index + 1}.${format === "jpeg" ? "jpg" : format}`;
      const caption = el("span", { text: `Image ${index + 1}` });
      const img = el("img", { src: source, alt: `Image ${index + 1} for: ${prompt}` });
      img.addEventListener("load", () => {
        caption.textContent = `Image ${index + 1} · ${img.naturalWidth}×${img.naturalHeight}`;
      });
      result.append(
        el(
          "figure",
          { className: "generated" },
          img,
          el("figcaption", {}, caption, " ", el("a", { href: source, download: name, text: `Download ${name}` })),
        ),
      );
    });
    const count = response.data.length;
    setStatus(status, `${count} image${count === 1 ? "" : "s"} from ${body.model} in ${seconds(started)}.`);
  } catch (error) {
    clearInterval(ticker);
    if (error.name === "AbortError") setStatus(status, "Cancelled.");
    else setStatus(status, describeError(error), "error");
  } finally {
    running = null;
    button.textContent = "Generate";
    button.classList.add("primary");
    button.disabled = !usable;
  }
}

export function init() {
  $("img-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (running) running.abort();
    else generate();
  });
  rememberChoice($("img-model"), MODEL_CHOICE);
}

export function setModels(models) {
  usable = fillModelSelect({
    select: $("img-model"),
    note: $("img-no-model"),
    form: $("img-form"),
    models,
    what: "image",
    storageKey: MODEL_CHOICE,
  });
}
