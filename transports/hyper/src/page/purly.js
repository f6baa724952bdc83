// purly's live page: renders a flat-DOM model (PROTOCOL.md section 6), kept live by
// purly-client.js (the one copy of the protocol in JavaScript). Plain JavaScript modules, no
// build step, no framework.
//
// Any client can write the model, so model data is never parsed as HTML: text becomes text
// nodes, `script` and similar elements are never created, string-valued `on*` attributes are
// ignored and `javascript:` URLs are dropped. The page's Content-Security-Policy (a per-response
// nonce for this script only) is a second line of defence.
import { connect } from "./purly-client.js";

const mount = document.getElementById("purly-root");
const statusBox = document.getElementById("purly-status");
const page = new URL(window.location.href);
const client = connect(page.pathname.replace(/\/+$/, "") + "/stream");

// Elements that could run code, change the document's base or load plugins.
const BLOCKED_TAGS = new Set([
  "script", "noscript", "base", "meta", "link", "object", "embed", "applet", "frame",
  "frameset", "iframe", "template",
]);
// Attributes that hold URLs: `javascript:` (and the like) never reach them.
const URL_ATTRIBUTES = new Set([
  "href", "src", "action", "formaction", "xlink:href", "data", "poster", "background",
  "cite", "codebase", "longdesc", "manifest", "ping", "srcset", "usemap", "lowsrc", "dynsrc",
]);
const SAFE_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]*$/;
const NON_TEXT_INPUTS = new Set([
  "checkbox", "radio", "file", "submit", "button", "reset", "image", "color",
]);

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function blank() {
  return Object.create(null);
}

function view(key) {
  const state = client.state;
  return Object.prototype.hasOwnProperty.call(state, key) ? state[key] : undefined;
}

const STATUS_TEXT = {
  connecting: "connecting…", live: "live", reconnecting: "reconnecting…", closed: "closed",
};

function showStatus(state) {
  statusBox.dataset.state = state;
  statusBox.textContent = STATUS_TEXT[state] || state;
}

client.on("status", showStatus);
client.on("error", (error) => console.warn("purly: the server refused a frame:", error.code, error.detail));
client.subscribe((_state, _diff, change) => {
  if (change.source === "snapshot") renderAll();
  else for (const key of new Set(change.keys)) render(key);
});

// ---- rendering: one DOM node per model key, updated in place ----

const nodes = new Map(); // key -> { el, tag, blocked, attributes: Set, style: Set, listeners: Map }
const waiting = new Map(); // key not yet in the model -> Set of parent keys that refer to it
const rendering = new Set();

function renderAll() {
  const keys = new Set(Object.keys(client.state));
  for (const key of Array.from(nodes.keys())) if (!keys.has(key)) render(key);
  for (const key of keys) render(key);
  render("root");
}

function render(key) {
  if (rendering.has(key)) return; // a reference cycle: leave the inner occurrence alone
  rendering.add(key);
  try {
    const element = view(key);
    if (key === "root") {
      renderChildren(mount, "root", isObject(element) ? element.children : []);
      return;
    }
    if (!isObject(element)) {
      removeNode(key);
      return;
    }
    const node = nodeFor(key, element);
    if (!node.blocked) {
      applyAttributes(node, key, element.attributes);
      renderChildren(node.el, key, element.children);
    }
    const parents = waiting.get(key);
    if (parents) {
      waiting.delete(key);
      for (const parent of parents) render(parent);
    }
  } finally {
    rendering.delete(key);
  }
}

function nodeFor(key, element) {
  const tag = typeof element.tagName === "string" ? element.tagName.toLowerCase() : "div";
  const existing = nodes.get(key);
  if (existing && existing.tag === tag) return existing;
  const blocked = BLOCKED_TAGS.has(tag) || !SAFE_NAME.test(tag);
  const el = document.createElement(blocked ? "span" : tag);
  if (blocked) el.hidden = true;
  const node = {
    el: el, tag: tag, blocked: blocked,
    attributes: new Set(), style: new Set(), listeners: new Map(),
  };
  if (existing) {
    while (existing.el.firstChild && !blocked) el.appendChild(existing.el.firstChild);
    existing.el.replaceWith(el);
  }
  nodes.set(key, node);
  return node;
}

function removeNode(key) {
  const node = nodes.get(key);
  if (!node) return;
  nodes.delete(key);
  node.el.remove();
}

function childFor(ref, parentKey) {
  if (!nodes.has(ref) && isObject(view(ref))) render(ref);
  const node = nodes.get(ref);
  if (node) return node.el;
  if (!waiting.has(ref)) waiting.set(ref, new Set());
  waiting.get(ref).add(parentKey);
  return null;
}

function renderChildren(parent, parentKey, children) {
  const wanted = [];
  for (const child of Array.isArray(children) ? children : []) {
    if (typeof child === "string" || typeof child === "number") {
      wanted.push(String(child));
    } else if (isObject(child) && child.type === "ref" && typeof child.ref === "string") {
      const el = childFor(child.ref, parentKey);
      if (el && el !== parent && !el.contains(parent)) wanted.push(el);
    }
  }
  let cursor = parent.firstChild;
  for (const item of wanted) {
    if (typeof item === "string") {
      if (cursor && cursor.nodeType === Node.TEXT_NODE) {
        if (cursor.data !== item) cursor.data = item;
        cursor = cursor.nextSibling;
      } else {
        parent.insertBefore(document.createTextNode(item), cursor);
      }
    } else if (cursor === item) {
      cursor = cursor.nextSibling;
    } else {
      parent.insertBefore(item, cursor);
    }
  }
  while (cursor) {
    const next = cursor.nextSibling;
    parent.removeChild(cursor);
    cursor = next;
  }
}

function applyAttributes(node, key, attributes) {
  const seen = new Set();
  let styled = false;
  for (const [name, value] of Object.entries(isObject(attributes) ? attributes : {})) {
    const lower = name.toLowerCase();
    if (lower === "key" || lower === "parent_key") continue;
    if (lower === "style") {
      applyStyle(node, value);
      styled = true;
      continue;
    }
    if (lower.startsWith("on")) {
      if (applyEvent(node, key, lower.slice(2), value)) seen.add(lower);
      continue;
    }
    if (!SAFE_NAME.test(name) || lower === "srcdoc" || lower === "is") continue;
    seen.add(lower);
    setAttribute(node.el, name, lower, value);
  }
  for (const old of node.attributes) {
    if (seen.has(old)) continue;
    if (old.startsWith("on")) removeEvent(node, old.slice(2));
    else setAttribute(node.el, old, old, null);
  }
  if (!styled && node.style.size > 0) applyStyle(node, null);
  node.attributes = seen;
}

function dangerousUrl(text) {
  // Browsers ignore control characters and spaces inside a scheme: strip them as they do.
  const plain = text.replace(/[\u0000-\u0020\u007f-\u009f]/g, "").toLowerCase();
  return plain.startsWith("javascript:") || plain.startsWith("vbscript:") ||
    plain.startsWith("data:text/html") || plain.startsWith("data:image/svg");
}

function setAttribute(el, name, lower, value) {
  const absent = value === null || value === undefined || value === false;
  // Form values are properties: the attribute is only the initial value.
  if (lower === "value" && "value" in el) {
    const text = absent ? "" : String(value);
    if (el.value !== text) el.value = text;
    return;
  }
  if ((lower === "checked" || lower === "selected") && lower in el) {
    el[lower] = !absent && value !== "false";
    return;
  }
  if (absent) {
    el.removeAttribute(name);
    return;
  }
  const text = value === true ? "" :
    (typeof value === "object" ? JSON.stringify(value) : String(value));
  if (URL_ATTRIBUTES.has(lower) && dangerousUrl(text)) {
    el.removeAttribute(name);
    return;
  }
  try {
    el.setAttribute(name, text);
  } catch (_) {
    // An attribute name the DOM refuses: skip it.
  }
}

// `background_color`, `background-color` and `backgroundColor` all name `background-color`.
function cssName(name) {
  if (name.startsWith("--")) return name;
  return name.replace(/_/g, "-").replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
}

function applyStyle(node, style) {
  const seen = new Set();
  for (const [name, value] of Object.entries(isObject(style) ? style : {})) {
    if (value === null || value === undefined || isObject(value) || Array.isArray(value)) continue;
    const property = cssName(name);
    seen.add(property);
    const text = String(value);
    if (/url\s*\(\s*['"]?\s*javascript:/i.test(text)) continue;
    if (node.el.style.getPropertyValue(property) !== text) node.el.style.setProperty(property, text);
  }
  for (const old of node.style) if (!seen.has(old)) node.el.style.removeProperty(old);
  node.style = seen;
}

function textual(el) {
  if (el.tagName === "TEXTAREA") return true;
  if (el.tagName !== "INPUT") return false;
  return !NON_TEXT_INPUTS.has((el.getAttribute("type") || "text").toLowerCase());
}

// Returns whether a listener is attached. String handlers (`onclick="..."`) are ignored.
function applyEvent(node, key, name, spec) {
  if (!isObject(spec) || typeof spec.callback !== "string" || !SAFE_NAME.test(name)) {
    removeEvent(node, name);
    return false;
  }
  // As in the original page (React), onChange of a text field fires on every input.
  const domEvent = name === "change" && textual(node.el) ? "input" : name;
  const existing = node.listeners.get(name);
  if (existing && existing.domEvent === domEvent) {
    existing.spec = spec;
    return true;
  }
  removeEvent(node, name);
  const listener = { domEvent: domEvent, spec: spec, handler: null };
  listener.handler = (event) => fire(key, listener.spec, event);
  node.el.addEventListener(domEvent, listener.handler);
  node.listeners.set(name, listener);
  return true;
}

function removeEvent(node, name) {
  const listener = node.listeners.get(name);
  if (!listener) return;
  node.el.removeEventListener(listener.domEvent, listener.handler);
  node.listeners.delete(name);
}

function plain(value) {
  if (value === null || ["string", "number", "boolean"].includes(typeof value)) return value;
  return null;
}

// PROTOCOL.md section 6: the update for `update`, then the signal, in one frame.
function fire(key, spec, event) {
  const names = Array.isArray(spec.update) ? spec.update.filter((n) => typeof n === "string") : [];
  let update;
  if (names.length > 0) {
    const attributes = blank();
    for (const name of names) attributes[name] = plain(event.currentTarget[name]);
    update = blank();
    update[key] = { attributes: attributes };
  }
  const data = blank();
  for (const name of Array.isArray(spec.keys) ? spec.keys : []) {
    if (typeof name === "string") data[name] = plain(event[name]);
  }
  const signal = blank();
  signal[key] = { callback: spec.callback, event: data };
  // A refusal is reported by the error listener above.
  client.send({ update: update, signal: signal }).catch(() => {});
}
