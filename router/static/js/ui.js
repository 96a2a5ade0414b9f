// Small DOM helpers shared by the tabs.

import { ApiError, getKey } from "./api.js";

/** Fill a model <select> and say when there is no model of that kind.
 *  `models` null: the list could not be loaded (no key yet).
 *  Returns whether any model can be picked. */
export function fillModelSelect({ select, note, form, models, what, storageKey }) {
  const previous = select.value || localStorage.getItem(storageKey) || "";
  select.replaceChildren();
  for (const model of models || []) {
    const option = document.createElement("option");
    option.value = model.id;
    const extra = [];
    if (model.status && model.status !== "loaded") extra.push(model.status);
    option.textContent = extra.length ? `${model.id} (${extra.join(", ")})` : model.id;
    if (model.error) option.title = model.error;
    select.append(option);
  }
  if (models && models.some((m) => m.id === previous)) select.value = previous;
  const usable = Boolean(models && models.length);
  select.disabled = !usable;
  if (form) {
    for (const control of form.querySelectorAll("button, input, textarea, select")) control.disabled = !usable;
  }
  note.hidden = usable;
  note.textContent =
    models === null
      ? `Enter a valid API key above to see the ${what} models.`
      : `This server has no ${what} model${getKey() ? " for this API key" : ""}.`;
  return usable;
}

export function rememberChoice(select, storageKey) {
  select.addEventListener("change", () => localStorage.setItem(storageKey, select.value));
}

export function describeError(error) {
  if (error instanceof ApiError) return error.describe();
  return `Error: ${error && error.message ? error.message : String(error)}`;
}

/** Set a status line; kind is "" (neutral), "busy" or "error". */
export function setStatus(element, text, kind = "") {
  element.textContent = text;
  element.className = `status${kind ? ` status-${kind}` : ""}`;
  element.setAttribute("role", kind === "error" ? "alert" : "status");
}

export function seconds(since) {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "className") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
