// The transcribe tab: an audio file or a microphone recording → POST
// /v1/audio/transcriptions (or /translations) as multipart → the text, the
// subtitles, or verbose_json's segments as a table; with "Stream", the
// transcript.text.delta events as they arrive.

import { apiFetch, sseData, streamError } from "./api.js";
import { describeError, el, fillModelSelect, rememberChoice, seconds, setStatus } from "./ui.js";

const MODEL_CHOICE = "modelyard.transcribe.model";
const $ = (id) => document.getElementById(id);
let usable = false;
let running = null; // AbortController of the request in flight
let audio = null; // { blob, name, what } to send
let previewUrl = null;
let resultUrl = null;
let recording = null; // { recorder, stream, chunks, started, ticker } while the microphone records

const canRecord = () =>
  Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);

// --- the audio ------------------------------------------------------------------

function kilobytes(size) {
  return `${(size / 1024).toFixed(1)} KB`;
}

function chooseAudio(chosen) {
  audio = chosen;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  const preview = $("stt-preview");
  preview.replaceChildren();
  if (!chosen) {
    $("stt-source").textContent = "No audio chosen.";
    return;
  }
  $("stt-source").textContent = `${chosen.what}: ${chosen.name} (${kilobytes(chosen.blob.size)})`;
  previewUrl = URL.createObjectURL(chosen.blob);
  preview.append(el("audio", { controls: true, src: previewUrl, id: "stt-audio", "aria-label": "The audio to transcribe" }));
}

/** The MediaRecorder type to ask for (Whisper's ffmpeg reads webm/opus;
 *  Safari records mp4 only) and the file extension the server goes by. */
function recordingType() {
  for (const [type, extension] of [
    ["audio/webm;codecs=opus", "webm"],
    ["audio/webm", "webm"],
    ["audio/ogg;codecs=opus", "ogg"],
    ["audio/mp4", "mp4"],
  ]) {
    if (MediaRecorder.isTypeSupported(type)) return { type, extension };
  }
  return { type: "", extension: "webm" };
}

function microphoneProblem(error) {
  if (error && (error.name === "NotAllowedError" || error.name === "SecurityError")) {
    return "The browser was not allowed to use the microphone. Allow it for this page (in the address bar's site settings) and press Record again, or choose an audio file.";
  }
  if (error && (error.name === "NotFoundError" || error.name === "OverconstrainedError")) {
    return "No microphone was found. Connect one and press Record again, or choose an audio file.";
  }
  if (error && error.name === "NotReadableError") {
    return "The microphone could not be opened (another program may be using it).";
  }
  return `Could not record: ${error && error.message ? error.message : String(error)}`;
}

function setRecordButton(isRecording) {
  const button = $("stt-record");
  button.textContent = isRecording ? "Stop" : "Record";
  button.classList.toggle("recording", isRecording);
  button.setAttribute("aria-label", isRecording ? "Stop recording" : "Record from the microphone");
}

async function startRecording() {
  const status = $("stt-status");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    setStatus(status, microphoneProblem(error), "error");
    return;
  }
  const { type, extension } = recordingType();
  let recorder;
  try {
    recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  } catch (error) {
    for (const track of stream.getTracks()) track.stop();
    setStatus(status, microphoneProblem(error), "error");
    return;
  }
  const chunks = [];
  const started = performance.now();
  recording = { recorder, stream, chunks, started, ticker: null };
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data && event.data.size) chunks.push(event.data);
  });
  recorder.addEventListener("stop", () => {
    clearInterval(recording.ticker);
    for (const track of stream.getTracks()) track.stop();
    recording = null;
    setRecordButton(false);
    $("stt-run").disabled = !usable;
    const blob = new Blob(chunks, { type: recorder.mimeType || type || "audio/webm" });
    if (!blob.size) {
      setStatus(status, "The recording is empty: nothing came from the microphone.", "error");
      return;
    }
    $("stt-file").value = "";
    chooseAudio({ blob, name: `recording.${extension}`, what: "Recording" });
    setStatus(status, `Recorded ${seconds(started)}.`);
  });
  recorder.start();
  setRecordButton(true);
  $("stt-run").disabled = true; // the recording is not ready until it stops
  recording.ticker = setInterval(() => setStatus(status, `Recording… ${seconds(started)}`, "busy"), 250);
  setStatus(status, "Recording…", "busy");
}

function stopRecording() {
  if (recording && recording.recorder.state !== "inactive") recording.recorder.stop();
}

// --- options ----------------------------------------------------------------------

/** Translations take no language and no stream; a stream carries text only. */
function updateOptions() {
  const translating = $("stt-task").value === "translate";
  $("stt-language").disabled = !usable || translating;
  const streamable = !translating && $("stt-format").value === "text";
  $("stt-stream").disabled = !usable || !streamable;
  if (!streamable) $("stt-stream").checked = false;
  $("stt-record").disabled = !usable && !recording;
  $("stt-run").textContent = running ? "Cancel" : translating ? "Translate" : "Transcribe";
}

// --- results --------------------------------------------------------------------------

function clock(value) {
  const total = Math.max(0, Number(value) || 0);
  const minutes = Math.floor(total / 60);
  const rest = (total - minutes * 60).toFixed(2).padStart(5, "0");
  return `${minutes}:${rest}`;
}

function transcriptBlock(text) {
  return el("pre", { className: "transcript", id: "stt-text", tabindex: "0", "aria-label": "Transcript", text });
}

function downloadLink(text, format) {
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  const types = { srt: "application/x-subrip", vtt: "text/vtt", verbose_json: "application/json", text: "text/plain" };
  resultUrl = URL.createObjectURL(new Blob([text], { type: types[format] || "text/plain" }));
  const extension = format === "verbose_json" ? "json" : format === "text" ? "txt" : format;
  const name = `transcript.${extension}`;
  return el("p", {}, el("a", { href: resultUrl, download: name, id: "stt-download", text: `Download ${name}` }));
}

function segmentsTable(segments) {
  const body = el("tbody");
  for (const segment of segments) {
    body.append(
      el(
        "tr",
        {},
        el("td", { className: "time", text: clock(segment.start) }),
        el("td", { className: "time", text: clock(segment.end) }),
        el("td", { text: String(segment.text || "").trim() }),
      ),
    );
  }
  return el(
    "div",
    { className: "table-scroll" },
    el(
      "table",
      { className: "segments", id: "stt-segments" },
      el("caption", { text: "Segments (minutes:seconds)" }),
      el(
        "thead",
        {},
        el("tr", {}, el("th", { scope: "col", text: "Start" }), el("th", { scope: "col", text: "End" }), el("th", { scope: "col", text: "Text" })),
      ),
      body,
    ),
  );
}

function showVerbose(body, raw) {
  const facts = [];
  if (body.language) facts.push(`language: ${body.language}`);
  if (body.duration !== undefined) facts.push(`duration: ${Number(body.duration).toFixed(2)} s`);
  const parts = [transcriptBlock(String(body.text || "").trim())];
  if (facts.length) parts.push(el("p", { className: "meta", text: facts.join(" · ") }));
  if (Array.isArray(body.segments) && body.segments.length) parts.push(segmentsTable(body.segments));
  parts.push(downloadLink(raw, "verbose_json"));
  $("stt-result").replaceChildren(...parts);
}

// --- the request ------------------------------------------------------------------------

async function readStream(response, status, started) {
  const block = transcriptBlock("");
  block.setAttribute("aria-busy", "true");
  $("stt-result").replaceChildren(block);
  let text = "";
  try {
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      if (event.error) throw streamError(event);
      if (event.type === "transcript.text.delta") {
        text += event.delta || "";
        block.textContent = text;
        setStatus(status, `Transcribing… ${seconds(started)}`, "busy");
      } else if (event.type === "transcript.text.done") {
        text = event.text ?? text;
        block.textContent = text;
      }
    }
  } finally {
    block.removeAttribute("aria-busy");
  }
  return text;
}

async function transcribe() {
  const status = $("stt-status");
  if (!audio) {
    setStatus(status, "Choose an audio file or record from the microphone first.", "error");
    return;
  }
  const translating = $("stt-task").value === "translate";
  const format = $("stt-format").value;
  const streaming = $("stt-stream").checked && !$("stt-stream").disabled;
  const model = $("stt-model").value;
  const form = new FormData();
  form.append("file", audio.blob, audio.name);
  form.append("model", model);
  form.append("response_format", format);
  const language = $("stt-language").value.trim();
  if (language && !translating) form.append("language", language);
  const prompt = $("stt-prompt").value.trim();
  if (prompt) form.append("prompt", prompt);
  if (streaming) form.append("stream", "true");

  running = new AbortController();
  $("stt-result").replaceChildren(); // an answer left from the last request would read as this one's
  const button = $("stt-run");
  button.classList.remove("primary");
  updateOptions();
  const started = performance.now();
  const doing = translating ? "Translating" : "Transcribing";
  const ticker = setInterval(() => setStatus(status, `${doing}… ${seconds(started)}`, "busy"), 250);
  setStatus(status, `${doing}…`, "busy");
  const path = translating ? "/v1/audio/translations" : "/v1/audio/transcriptions";
  try {
    const response = await apiFetch(path, { method: "POST", body: form, signal: running.signal });
    if (streaming) {
      clearInterval(ticker);
      await readStream(response, status, started);
    } else {
      const raw = await response.text();
      clearInterval(ticker);
      if (format === "verbose_json") {
        showVerbose(JSON.parse(raw), raw);
      } else if (format === "text") {
        $("stt-result").replaceChildren(transcriptBlock(raw.trim()));
      } else {
        $("stt-result").replaceChildren(transcriptBlock(raw), downloadLink(raw, format));
      }
    }
    setStatus(status, `${translating ? "Translated" : "Transcribed"} by ${model} in ${seconds(started)}.`);
  } catch (error) {
    clearInterval(ticker);
    if (error.name === "AbortError") setStatus(status, "Cancelled.");
    else setStatus(status, describeError(error), "error");
  } finally {
    clearInterval(ticker);
    running = null;
    button.classList.add("primary");
    updateOptions();
    button.disabled = !usable;
  }
}

export function init() {
  $("stt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (running) running.abort();
    else transcribe();
  });
  $("stt-file").addEventListener("change", () => {
    const file = $("stt-file").files[0];
    chooseAudio(file ? { blob: file, name: file.name, what: "File" } : null);
  });
  $("stt-task").addEventListener("change", updateOptions);
  $("stt-format").addEventListener("change", updateOptions);
  if (canRecord()) {
    $("stt-record-field").hidden = false;
    $("stt-record").addEventListener("click", () => (recording ? stopRecording() : startRecording()));
    setRecordButton(false);
  }
  rememberChoice($("stt-model"), MODEL_CHOICE);
  updateOptions();
}

export function setModels(models) {
  usable = fillModelSelect({
    select: $("stt-model"),
    note: $("stt-no-model"),
    form: $("stt-form"),
    models,
    what: "transcription",
    storageKey: MODEL_CHOICE,
  });
  updateOptions();
  if (recording) $("stt-run").disabled = true;
}
