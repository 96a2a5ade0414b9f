// Talking to the server: the API key, errors in OpenAI's shape, and SSE.

const KEY_STORAGE = "modelyard.apiKey";

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

/** An error answer from the server ({"error": {"message", "type", "code", "param"}}). */
export class ApiError extends Error {
  constructor(status, message, { type = null, code = null, param = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
  }

  /** 401 (no key, wrong key) or 403 (the key may not use this). */
  get keyRefused() {
    return this.status === 401 || this.status === 403;
  }

  /** One line for a person to read. */
  describe() {
    const parts = [this.status || null, this.code].filter(Boolean);
    const detail = parts.length ? ` (${parts.join(" ")})` : "";
    if (this.status === 401) {
      return getKey()
        ? `The server refused the API key${detail}: ${this.message}`
        : `This server needs an API key${detail}: ${this.message}`;
    }
    if (this.status === 403) return `The server refused the API key for this request${detail}: ${this.message}`;
    return `Error${detail}: ${this.message}`;
  }

  static fromBody(status, body) {
    const error = body && typeof body === "object" ? body.error : null;
    if (error && typeof error === "object") {
      return new ApiError(status, String(error.message || "unknown error"), error);
    }
    if (typeof error === "string") return new ApiError(status, error);
    return new ApiError(status, `HTTP ${status}`);
  }

  static async fromResponse(response) {
    let text = "";
    try {
      text = await response.text();
    } catch {
      // the body could not be read: the status is all there is
    }
    try {
      return ApiError.fromBody(response.status, JSON.parse(text));
    } catch {
      const message = text.trim().slice(0, 500) || response.statusText || `HTTP ${response.status}`;
      return new ApiError(response.status, message);
    }
  }
}

/** Listeners told about every refused key (to show the key field). */
const refusalListeners = new Set();
export function onKeyRefused(listener) {
  refusalListeners.add(listener);
}

function reportError(error) {
  if (error instanceof ApiError && error.keyRefused) {
    for (const listener of refusalListeners) listener(error);
  }
}

/** fetch() with the key as Bearer; a non-2xx answer throws an ApiError. */
export async function apiFetch(path, { method = "GET", body, signal, headers = {} } = {}) {
  const allHeaders = new Headers(headers);
  const key = getKey();
  if (key) allHeaders.set("Authorization", `Bearer ${key}`);
  let payload = body;
  // FormData (a file upload) goes as it is: fetch sets its multipart boundary.
  if (body !== undefined && typeof body !== "string" && !(body instanceof FormData)) {
    payload = JSON.stringify(body);
    allHeaders.set("Content-Type", "application/json");
  }
  let response;
  try {
    response = await fetch(path, { method, body: payload, signal, headers: allHeaders });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `Could not reach the server: ${error.message}`);
  }
  if (!response.ok) {
    const error = await ApiError.fromResponse(response);
    reportError(error);
    throw error;
  }
  return response;
}

export async function apiJson(path, options) {
  const response = await apiFetch(path, options);
  return response.json();
}

/** The `data:` payloads of a server-sent event stream, as they arrive. */
export async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finished = false;
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      buffer += decoder.decode(value, { stream: true });
      let boundary;
      while ((boundary = buffer.search(/\r?\n\r?\n/)) !== -1) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    // Left early (the caller stopped reading): close the connection.
    if (!finished) reader.cancel().catch(() => {});
  }
}

/** An error event inside a stream ({"error": ...}) as an ApiError. */
export function streamError(event) {
  const error = ApiError.fromBody(0, event);
  reportError(error);
  return error;
}
