// Markdown → sanitised HTML with highlighted code blocks.
// marked parses, DOMPurify removes anything unsafe, highlight.js colours code.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.js";
import hljs from "../vendor/highlight.js/highlight.min.js";

const marked = new Marked({ gfm: true, breaks: false });

// Links from a model's answer open in a new tab and tell the target nothing.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Replace the contents of `element` with `text` rendered as Markdown. */
export function renderMarkdown(element, text) {
  const html = marked.parse(text || "");
  element.innerHTML = DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
  for (const code of element.querySelectorAll("pre code")) {
    const language = [...code.classList].find((c) => c.startsWith("language-"))?.slice("language-".length);
    if (language && !hljs.getLanguage(language)) code.classList.remove(`language-${language}`);
    hljs.highlightElement(code);
  }
  for (const table of element.querySelectorAll("table")) {
    if (table.parentElement.classList.contains("table-scroll")) continue;
    const wrapper = document.createElement("div");
    wrapper.className = "table-scroll";
    table.replaceWith(wrapper);
    wrapper.append(table);
  }
}

hljs.configure({ ignoreUnescapedHTML: true });
