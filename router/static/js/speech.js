// The speech tab: text + voice → POST /v1/audio/speech → an audio player and a download link.

import { apiFetch, apiJson } from "./api.js";
import { describeError, el, fillModelSelect, rememberChoice, seconds, setStatus } from "./ui.js";

const MODEL_CHOICE = "modelyard.speech.model";
const VOICE_CHOICE = "modelyard.speech.voice";
const $ = (id) => document.getElementById(id);
let usable = false;
let audioUrl = null;
let lastVoicesKey = null;

async function loadVoices() {
  const select = $("tts-voice");
  const model = $("tts-model").value;
  select.replaceChildren();
  if (!model) return;
  let voices = [];
  try {
    const list = await apiJson(`/v1/audio/voices?model=${encodeURIComponent(model)}`);
    voices = (list.data || []).filter((v) => v.model === model);
  } catch (error) {
    setStatus($("tts-status"), `Could not list the voices. ${describeError(error)}`, "error");
  }
  if (!voices.length) select.append(el("option", { value: "", text: "the model's default voice" }));
  const saved = localStorage.getItem(VOICE_CHOICE);
  let chosen = null;
  for (const voice of voices) {
    const text = voice.speaker && voice.speaker !== voice.id ? `${voice.id} (${voice.speaker})` : voice.id;
    select.append(el("option", { value: voice.id, text }));
    if (voice.default && chosen === null) chosen = voice.id;
  }
  if (voices.some((v) => v.id === saved)) chosen = saved;
  if (chosen !== null) select.value = chosen;
  select.disabled = !usable;
  document.body.dataset.voicesLoaded = "true";
}

async function speak() {
  const status = $("tts-status");
  const input = $("tts-text").value.trim();
  if (!input) {
    setStatus(status, "Enter some text to speak.", "error");
    return;
  }
  const format = $("tts-format").value;
  const body = { model: $("tts-model").value, input, response_format: format };
  const voice = $("tts-voice").value;
  if (voice) body.voice = voice;
  const speed = Number($("tts-speed").value);
  if (Number.isFinite(speed) && speed !== 1) body.speed = speed;

  const button = $("tts-run");
  button.disabled = true;
  const started = performance.now();
  setStatus(status, "Speaking…", "busy");
  try {
    const response = await apiFetch("/v1/audio/speech", { method: "POST", body });
    const type = response.headers.get("content-type") || (format === "wav" ? "audio/wav" : "audio/mpeg");
    const blob = new Blob([await response.arrayBuffer()], { type });
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = URL.createObjectURL(blob);
    const name = `speech.${format}`;
    const result = $("tts-result");
    result.replaceChildren(
      el("audio", { controls: true, src: audioUrl, "aria-label": "The spoken text", id: "tts-audio" }),
      el(
        "p",
        {},
        el("a", { href: audioUrl, download: name, id: "tts-download", text: `Download ${name}` }),
        ` (${(blob.size / 1024).toFixed(1)} KB)`,
      ),
    );
    setStatus(status, `Spoken by ${body.model}${voice ? ` as ${voice}` : ""} in ${seconds(started)}.`);
  } catch (error) {
    setStatus(status, describeError(error), "error");
  } finally {
    button.disabled = !usable;
  }
}

export function init() {
  $("tts-form").addEventListener("submit", (event) => {
    event.preventDefault();
    speak();
  });
  $("tts-model").addEventListener("change", () => {
    lastVoicesKey = null;
    loadVoices();
  });
  rememberChoice($("tts-model"), MODEL_CHOICE);
  rememberChoice($("tts-voice"), VOICE_CHOICE);
}

export function setModels(models) {
  usable = fillModelSelect({
    select: $("tts-model"),
    note: $("tts-no-model"),
    form: $("tts-form"),
    models,
    what: "speech",
    storageKey: MODEL_CHOICE,
  });
  // The voices are asked again when the model (or its status: a loaded model
  // also lists its backend's speakers) changes.
  const chosen = (models || []).find((m) => m.id === $("tts-model").value);
  const voicesKey = chosen ? `${chosen.id} ${chosen.status}` : "";
  if (voicesKey !== lastVoicesKey) {
    lastVoicesKey = voicesKey;
    if (usable) loadVoices();
    else $("tts-voice").replaceChildren();
  } else {
    $("tts-voice").disabled = !usable;
  }
}
