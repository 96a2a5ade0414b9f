// The chat tab: streamed replies over SSE, Markdown, reasoning blocks, a stop
// button, images attached for models that take them, and conversations kept
// in localStorage.

import { apiFetch, sseData, streamError } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { describeError, el, fillModelSelect } from "./ui.js";

const CHATS = "modelyard.chats.v1";
const SETTINGS = "modelyard.chatSettings.v1";
const MODEL_CHOICE = "modelyard.chat.model";
const MAX_CHATS = 50;

const $ = (id) => document.getElementById(id);

let store = { current: null, chats: [] };
let streaming = null; // { controller, message }
const rendered = new Map(); // message object → its elements
let chatModels = []; // the chat models of /v1/models, for their capabilities
let attached = []; // images for the next message: { name, url } with url a data URL

// --- storage ----------------------------------------------------------------------

function newId() {
  return `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

function loadStore() {
  try {
    const saved = JSON.parse(localStorage.getItem(CHATS) || "null");
    if (saved && Array.isArray(saved.chats)) {
      store = {
        current: saved.current,
        chats: saved.chats.filter((c) => c && Array.isArray(c.messages)).map((c) => ({ ...c, id: c.id || newId() })),
      };
    }
  } catch {
    // unreadable history: start afresh
  }
  for (const chat of store.chats) {
    for (const message of chat.messages) delete message.pending;
  }
  if (!store.chats.some((c) => c.id === store.current)) {
    if (!store.chats.length) store.chats.push(blankChat());
    store.current = store.chats[0].id;
  }
}

function saveStore() {
  store.chats = store.chats.slice(0, MAX_CHATS);
  try {
    localStorage.setItem(CHATS, JSON.stringify(store));
  } catch {
    // storage full: the oldest conversations go first
    if (store.chats.length > 1) {
      store.chats.pop();
      saveStore();
    }
  }
}

function blankChat() {
  return { id: newId(), title: "New chat", created: Date.now(), messages: [] };
}

function currentChat() {
  return store.chats.find((c) => c.id === store.current);
}

function loadSettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS) || "{}") || {};
  } catch {
    saved = {};
  }
  if (typeof saved.system === "string") $("chat-system").value = saved.system;
  for (const [key, id] of [
    ["temperature", "chat-temperature"],
    ["top_p", "chat-top-p"],
    ["max_tokens", "chat-max-tokens"],
  ]) {
    if (typeof saved[key] === "number" && Number.isFinite(saved[key])) $(id).value = String(saved[key]);
  }
  showSliderValues();
}

function settings() {
  return {
    system: $("chat-system").value,
    temperature: Number($("chat-temperature").value),
    top_p: Number($("chat-top-p").value),
    max_tokens: Math.max(1, Math.floor(Number($("chat-max-tokens").value) || 1)),
  };
}

function saveSettings() {
  localStorage.setItem(SETTINGS, JSON.stringify(settings()));
}

function showSliderValues() {
  $("chat-temperature-value").textContent = Number($("chat-temperature").value).toFixed(2);
  $("chat-top-p-value").textContent = Number($("chat-top-p").value).toFixed(2);
}

// --- rendering ----------------------------------------------------------------------

function renderHistory() {
  const list = $("chat-history");
  list.replaceChildren();
  for (const chat of store.chats) {
    const current = chat.id === store.current;
    const open = el("button", {
      type: "button",
      className: "history-open",
      "aria-current": current ? "true" : null,
      text: chat.title || "New chat",
      onclick: () => switchTo(chat.id),
    });
    const remove = el("button", {
      type: "button",
      className: "history-delete",
      "aria-label": `Delete conversation: ${chat.title || "New chat"}`,
      text: "Delete",
      onclick: () => deleteChat(chat.id),
    });
    list.append(el("li", { className: current ? "current" : "" }, open, remove));
  }
}

function metaText(message) {
  const parts = [];
  if (message.model) parts.push(message.model);
  if (message.usage && message.usage.completion_tokens !== undefined) {
    parts.push(`${message.usage.completion_tokens} tokens`);
  }
  if (message.seconds !== undefined) parts.push(`${message.seconds.toFixed(1)} s`);
  if (message.finish === "length") parts.push("cut at max tokens");
  if (message.stopped) parts.push("stopped");
  if (message.pending) parts.push("writing…");
  return parts.join(" · ");
}

function messageElement(message) {
  const user = message.role === "user";
  const body = el("div", { className: user ? "msg-body plain" : "msg-body markdown" });
  const reasoningBody = el("div", { className: "reasoning-body markdown" });
  const reasoning = el(
    "details",
    { className: "reasoning", hidden: !message.reasoning },
    el("summary", { text: "Reasoning" }),
    reasoningBody,
  );
  reasoning.addEventListener("toggle", () => {
    if (!reasoning.dataset.auto) reasoning.dataset.touched = "true";
    delete reasoning.dataset.auto;
  });
  const error = el("div", { className: "msg-error", role: "alert", hidden: true });
  const meta = el("div", { className: "msg-meta" });
  // Only images this page attached (data URLs) are shown: a history edited by hand loads nothing from elsewhere.
  const images = (message.images || [])
    .filter((image) => typeof image.url === "string" && image.url.startsWith("data:image/"))
    .map((image) => el("img", { src: image.url, alt: image.name || "attached image" }));
  const article = el(
    "article",
    { className: `msg msg-${message.role}`, "aria-label": user ? "You" : "Assistant" },
    el("div", { className: "msg-role", text: user ? "You" : "Assistant" }),
    images.length ? el("div", { className: "msg-images" }, ...images) : null,
    reasoning,
    body,
    error,
    meta,
  );
  const parts = { article, body, reasoning, reasoningBody, error, meta, frame: 0 };
  rendered.set(message, parts);
  updateMessage(message);
  return article;
}

function setDetailsOpen(details, open) {
  if (details.open === open || details.dataset.touched) return;
  details.dataset.auto = "true";
  details.open = open;
}

function updateMessage(message) {
  const parts = rendered.get(message);
  if (!parts) return;
  if (message.role === "user") {
    parts.body.textContent = message.content;
  } else {
    renderMarkdown(parts.body, message.content);
    parts.body.hidden = !message.content && Boolean(message.reasoning || message.error);
    parts.article.classList.toggle("pending", Boolean(message.pending));
    if (message.reasoning) {
      parts.reasoning.hidden = false;
      renderMarkdown(parts.reasoningBody, message.reasoning);
      // Open while the model thinks; folded once the answer starts.
      setDetailsOpen(parts.reasoning, Boolean(message.pending && !message.content));
    }
  }
  parts.error.hidden = !message.error;
  parts.error.textContent = message.error || "";
  parts.meta.textContent = metaText(message);
  parts.meta.hidden = !parts.meta.textContent;
}

/** Re-render a streaming message at most once per frame. */
function scheduleUpdate(message) {
  const parts = rendered.get(message);
  if (!parts || parts.frame) return;
  parts.frame = requestAnimationFrame(() => {
    parts.frame = 0;
    updateMessage(message);
    scrollToEnd();
  });
}

function scrollToEnd() {
  const log = $("chat-log");
  if (log.scrollHeight - log.scrollTop - log.clientHeight < 160) log.scrollTop = log.scrollHeight;
}

function renderLog() {
  const log = $("chat-log");
  rendered.clear();
  const chat = currentChat();
  log.replaceChildren();
  if (!chat.messages.length) {
    const model = $("chat-model").value;
    log.append(
      el(
        "p",
        { className: "chat-empty" },
        model ? `Start a conversation with ${model}.` : "Start a conversation.",
      ),
    );
  }
  for (const message of chat.messages) log.append(messageElement(message));
  log.scrollTop = log.scrollHeight;
}

function setStreaming(active) {
  $("chat-send").disabled = active || $("chat-model").disabled;
  $("chat-stop").disabled = !active;
  document.body.classList.toggle("chat-streaming", active);
}

// --- conversations ------------------------------------------------------------------

function stopStream() {
  if (streaming) streaming.controller.abort();
}

function switchTo(id) {
  if (id === store.current) return;
  stopStream();
  store.current = id;
  saveStore();
  renderHistory();
  renderLog();
}

function newChat() {
  stopStream();
  const chat = currentChat();
  if (!chat || chat.messages.length) {
    const fresh = blankChat();
    store.chats.unshift(fresh);
    store.current = fresh.id;
  }
  saveStore();
  renderHistory();
  renderLog();
  $("chat-input").focus();
}

function deleteChat(id) {
  if (id === store.current) stopStream();
  store.chats = store.chats.filter((c) => c.id !== id);
  if (!store.chats.length) store.chats.push(blankChat());
  if (!store.chats.some((c) => c.id === store.current)) store.current = store.chats[0].id;
  saveStore();
  renderHistory();
  renderLog();
}

// --- sending ------------------------------------------------------------------------

function requestMessages(chat, upTo) {
  const { system } = settings();
  const messages = [];
  if (system.trim()) messages.push({ role: "system", content: system });
  for (const message of chat.messages.slice(0, upTo)) {
    if (message.images && message.images.length) {
      const parts = message.content ? [{ type: "text", text: message.content }] : [];
      for (const image of message.images) parts.push({ type: "image_url", image_url: { url: image.url } });
      messages.push({ role: message.role, content: parts });
      continue;
    }
    if (!message.content) continue; // failed or empty replies are not sent back
    messages.push({ role: message.role, content: message.content });
  }
  return messages;
}

async function send() {
  if (streaming) return;
  const input = $("chat-input");
  const text = input.value.trim();
  const model = $("chat-model").value;
  const images = takesImages(model) ? attached : [];
  if ((!text && !images.length) || !model) return;
  const chat = currentChat();
  const title = text || images.map((i) => i.name).join(", ") || "Image";
  if (!chat.messages.length) chat.title = title.length > 48 ? `${title.slice(0, 47)}…` : title;
  const sent = { role: "user", content: text };
  if (images.length) sent.images = images;
  chat.messages.push(sent);
  attached = [];
  renderAttachments();
  const reply = { role: "assistant", content: "", model, pending: true };
  chat.messages.push(reply);
  // The conversation moves to the top of the list.
  store.chats = [chat, ...store.chats.filter((c) => c !== chat)];
  input.value = "";
  saveStore();
  renderHistory();
  renderLog();

  const { temperature, top_p, max_tokens } = settings();
  const body = {
    model,
    messages: requestMessages(chat, chat.messages.length - 1),
    stream: true,
    stream_options: { include_usage: true },
    temperature,
    top_p,
    max_tokens,
  };
  const controller = new AbortController();
  streaming = { controller, message: reply };
  setStreaming(true);
  const started = performance.now();
  try {
    const response = await apiFetch("/v1/chat/completions", { method: "POST", body, signal: controller.signal });
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      if (event.error) throw streamError(event);
      if (event.model) reply.model = event.model;
      if (event.usage) reply.usage = event.usage;
      for (const choice of event.choices || []) {
        const delta = choice.delta || {};
        if (delta.reasoning_content) reply.reasoning = (reply.reasoning || "") + delta.reasoning_content;
        if (delta.content) reply.content += delta.content;
        if (choice.finish_reason) reply.finish = choice.finish_reason;
      }
      scheduleUpdate(reply);
    }
  } catch (error) {
    if (error.name === "AbortError") reply.stopped = true;
    else reply.error = describeError(error);
  } finally {
    reply.pending = false;
    reply.seconds = (performance.now() - started) / 1000;
    streaming = null;
    setStreaming(false);
    const parts = rendered.get(reply);
    if (parts && parts.frame) cancelAnimationFrame(parts.frame);
    if (parts) parts.frame = 0;
    updateMessage(reply);
    scrollToEnd();
    saveStore();
    // A model loaded by this request now says what it takes (capabilities): the page asks for the list again.
    const used = chatModels.find((m) => m.id === model);
    if (used && used.status !== "loaded") document.dispatchEvent(new CustomEvent("modelyard:models-changed"));
  }
}

// --- images -------------------------------------------------------------------------

/** Whether /v1/models says the model takes images ("vision" among its capabilities). */
function takesImages(id) {
  const model = chatModels.find((m) => m.id === id);
  return Boolean(model && (model.capabilities || []).includes("vision"));
}

function showAttach() {
  const can = takesImages($("chat-model").value);
  $("chat-attach").hidden = !can;
  $("chat-attachments").hidden = !can || !attached.length;
}

function renderAttachments() {
  const list = $("chat-attachments");
  list.replaceChildren();
  attached.forEach((image, index) => {
    const remove = el("button", {
      type: "button",
      className: "attachment-remove",
      "aria-label": `Remove ${image.name}`,
      text: "Remove",
      onclick: () => {
        attached.splice(index, 1);
        renderAttachments();
      },
    });
    list.append(el("li", {}, el("img", { src: image.url, alt: image.name }), remove));
  });
  showAttach();
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function attachFiles(files) {
  for (const file of files) attached.push({ name: file.name, url: await readAsDataUrl(file) });
  $("chat-image").value = "";
  renderAttachments();
}

// --- the tab's interface ----------------------------------------------------------------

export function init() {
  loadStore();
  loadSettings();
  for (const id of ["chat-system", "chat-temperature", "chat-top-p", "chat-max-tokens"]) {
    $(id).addEventListener("input", () => {
      showSliderValues();
      saveSettings();
    });
  }
  $("chat-attach").addEventListener("click", () => $("chat-image").click());
  $("chat-image").addEventListener("change", () => attachFiles([...$("chat-image").files]));
  $("chat-model").addEventListener("change", () => {
    localStorage.setItem(MODEL_CHOICE, $("chat-model").value);
    showAttach();
    if (!currentChat().messages.length) renderLog();
  });
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("chat-stop").addEventListener("click", stopStream);
  $("chat-new").addEventListener("click", newChat);
  renderHistory();
  renderLog();
  setStreaming(false);
}

export function setModels(models) {
  chatModels = models || [];
  fillModelSelect({
    select: $("chat-model"),
    note: $("chat-no-model"),
    models,
    what: "chat",
    storageKey: MODEL_CHOICE,
  });
  setStreaming(Boolean(streaming));
  showAttach();
  if (!currentChat().messages.length) renderLog();
}
