// The page: tabs, the API key, and the model list that feeds every tab.

import { ApiError, apiJson, getKey, onKeyRefused, setKey } from "./api.js";
import * as chat from "./chat.js";
import * as embeddings from "./embeddings.js";
import * as images from "./images.js";
import * as speech from "./speech.js";
import * as transcribe from "./transcribe.js";

const sections = [
  { name: "chat", modality: "chat", module: chat },
  { name: "embeddings", modality: "embeddings", module: embeddings },
  { name: "images", modality: "image", module: images },
  { name: "speech", modality: "speech", module: speech },
  { name: "transcribe", modality: "transcription", module: transcribe },
];

const $ = (id) => document.getElementById(id);

// --- tabs -------------------------------------------------------------------

function selectTab(name, { focus = false, updateHash = true } = {}) {
  const section = sections.find((s) => s.name === name) || sections[0];
  for (const s of sections) {
    const tab = $(`tab-${s.name}`);
    const selected = s === section;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`panel-${s.name}`).hidden = !selected;
  }
  if (focus) $(`tab-${section.name}`).focus();
  if (updateHash && location.hash !== `#${section.name}`) history.replaceState(null, "", `#${section.name}`);
  document.body.dataset.tab = section.name;
}

function setUpTabs() {
  const list = document.querySelector('[role="tablist"]');
  for (const s of sections) $(`tab-${s.name}`).addEventListener("click", () => selectTab(s.name));
  // Arrow keys move between tabs (the WAI-ARIA tabs pattern).
  list.addEventListener("keydown", (event) => {
    const current = sections.findIndex((s) => $(`tab-${s.name}`).getAttribute("aria-selected") === "true");
    let next = null;
    if (event.key === "ArrowRight") next = (current + 1) % sections.length;
    else if (event.key === "ArrowLeft") next = (current - 1 + sections.length) % sections.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = sections.length - 1;
    if (next === null) return;
    event.preventDefault();
    selectTab(sections[next].name, { focus: true });
  });
  window.addEventListener("hashchange", () => selectTab(location.hash.slice(1), { updateHash: false }));
  selectTab(location.hash.slice(1) || "chat", { updateHash: false });
}

// --- the API key ----------------------------------------------------------------

function showKeyForm() {
  const form = $("key-form");
  form.hidden = false;
  document.body.classList.add("needs-key");
}

function showAuthProblem(error) {
  const banner = $("auth-banner");
  banner.textContent = error.describe();
  banner.hidden = false;
  showKeyForm();
}

function clearAuthProblem() {
  $("auth-banner").hidden = true;
  $("auth-banner").textContent = "";
}

function setUpKey() {
  const input = $("api-key");
  input.value = getKey();
  if (getKey()) showKeyForm();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    loadModels();
  });
  $("key-forget").addEventListener("click", () => {
    input.value = "";
    setKey("");
    loadModels();
  });
  onKeyRefused(showAuthProblem);
}

// --- models -----------------------------------------------------------------------

let refreshTimer = null;

/** Fetch /v1/models and hand each tab its models. While a model is still
 *  loading, the list is fetched again (quietly) every few seconds. */
async function loadModels({ quiet = false } = {}) {
  clearTimeout(refreshTimer);
  const banner = $("load-banner");
  if (!quiet) {
    banner.textContent = "Loading the model list…";
    banner.classList.remove("banner-error");
    banner.hidden = false;
  }
  let models = null;
  try {
    const list = await apiJson("/v1/models");
    models = list.data || [];
    clearAuthProblem();
    banner.hidden = true;
  } catch (error) {
    if (error instanceof ApiError && error.keyRefused) {
      banner.hidden = true; // the auth banner says it
      if (!quiet) $("api-key").focus();
    } else {
      banner.textContent = `Could not load the model list. ${error instanceof ApiError ? error.describe() : error}`;
      banner.classList.add("banner-error");
      banner.hidden = false;
    }
  }
  for (const s of sections) {
    s.module.setModels(models === null ? null : models.filter((m) => m.modality === s.modality));
  }
  document.body.dataset.ready = "true";
  if (models && models.some((m) => m.status === "loading")) {
    refreshTimer = setTimeout(() => loadModels({ quiet: true }), 3000);
  }
}

// --- start --------------------------------------------------------------------------

setUpTabs();
setUpKey();
document.addEventListener("modelyard:models-changed", () => loadModels({ quiet: true }));
for (const s of sections) s.module.init();
loadModels();
