// minimind-v chat page. The whole conversation lives here (the server is stateless): every turn
// re-sends all messages, images as data: URLs, with stream: true, and the answer is read from the
// server-sent events as it arrives. User text is only ever inserted with textContent (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SIDE = 1024;          // bigger pictures are scaled down before sending (the model sees 256 px)

const state = { model: null, messages: [], pending: [], busy: false, controller: null, auth: false };
window.chatState = state;       // for tests and the curious

async function init() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    state.model = h.model;
    state.auth = h.auth;
    $("model").textContent = h.model;
    $("temperature").value = h.defaults.temperature;
    $("top_p").value = h.defaults.top_p;
    $("max_tokens").value = Math.min(h.defaults.max_tokens, 256);
    $("key-row").hidden = !h.auth;
    $("web-link").hidden = !h.web;            // `serve --web DIR`: the model also runs in the browser
    $("api_key").value = localStorage.getItem("minimind-v-key") || "";
    const l = h.limits;
    $("limits").textContent = `context ${h.max_context} tokens · up to ${l.max_images} images, ` +
      `${Math.round(l.max_image_bytes / 1e6)} MB and ${Math.round(l.max_image_pixels / 1e6)} MP each`;
    setStatus("ready", "ok");
  } catch (e) {
    setStatus("server unreachable", "bad");
  }
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = "status " + (kind || "");
}

// ---------------------------------------------------------------- images

function readFile(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(fr.result);
    fr.onerror = () => reject(fr.error);
    fr.readAsDataURL(file);
  });
}

function shrink(dataUrl) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      const side = Math.max(img.naturalWidth, img.naturalHeight);
      if (side <= MAX_SIDE) return resolve(dataUrl);
      const s = MAX_SIDE / side;
      const c = document.createElement("canvas");
      c.width = Math.round(img.naturalWidth * s);
      c.height = Math.round(img.naturalHeight * s);
      c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
      resolve(c.toDataURL("image/jpeg", 0.9));
    };
    img.onerror = () => resolve(null);
    img.src = dataUrl;
  });
}

async function addFiles(files) {
  for (const f of files) {
    if (!f.type.startsWith("image/")) continue;
    const url = await shrink(await readFile(f));
    if (url) state.pending.push(url);
  }
  drawPending();
}

function drawPending() {
  const box = $("pending");
  box.replaceChildren();
  state.pending.forEach((url, i) => {
    const t = document.createElement("div");
    t.className = "thumb";
    const img = document.createElement("img");
    img.src = url;
    img.alt = "picture to send";
    const x = document.createElement("button");
    x.type = "button";
    x.textContent = "\u00d7";
    x.title = "remove";
    x.onclick = () => { state.pending.splice(i, 1); drawPending(); };
    t.append(img, x);
    box.append(t);
  });
}

// ---------------------------------------------------------------- messages

function bubble(role, images, text) {
  $("empty-hint")?.remove();
  const div = document.createElement("div");
  div.className = "msg " + role;
  for (const url of images || []) {
    const img = document.createElement("img");
    img.src = url;
    img.alt = "picture";
    div.append(img);
  }
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text || "";
  div.append(span);
  $("log").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function settings() {
  const body = {};
  const num = (id) => $(id).value === "" ? null : Number($(id).value);
  if (num("temperature") !== null) body.temperature = num("temperature");
  if (num("top_p") !== null) body.top_p = num("top_p");
  if (num("max_tokens") !== null) body.max_tokens = Math.max(1, Math.round(num("max_tokens")));
  if (num("seed") !== null) body.seed = Math.round(num("seed"));
  return body;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) {
    h["Authorization"] = "Bearer " + key;
    localStorage.setItem("minimind-v-key", key);
  }
  return h;
}

async function send() {
  const text = $("prompt").value.trim();
  if (state.busy || (!text && !state.pending.length)) return;
  const images = state.pending;
  const content = images.length
    ? [...images.map((url) => ({ type: "image_url", image_url: { url } })), { type: "text", text }]
    : text;
  state.messages.push({ role: "user", content });
  bubble("user", images, text);
  state.pending = [];
  drawPending();
  $("prompt").value = "";

  const out = bubble("assistant", [], "");
  out.classList.add("streaming");
  out.dataset.chunks = "0";
  const span = out.querySelector(".text");
  setBusy(true);
  const t0 = performance.now();
  let reply = "", finish = null, usage = null, failed = null;
  state.controller = new AbortController();
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: state.controller.signal,
      body: JSON.stringify({ model: state.model, messages: state.messages, stream: true,
                             stream_options: { include_usage: true }, ...settings() }),
    });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || `HTTP ${resp.status}`);
    }
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const payload = line.slice(6);
          if (payload === "[DONE]") continue;
          const obj = JSON.parse(payload);
          if (obj.error) throw new Error(obj.error.message);
          if (obj.usage) usage = obj.usage;
          const choice = obj.choices && obj.choices[0];
          if (!choice) continue;
          if (choice.delta && choice.delta.content) {
            reply += choice.delta.content;
            span.textContent = reply;
            out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
            out.scrollIntoView({ block: "end" });
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
  } catch (e) {
    failed = e.name === "AbortError" ? null : e.message;
    if (e.name === "AbortError") finish = "stopped";
  }
  out.classList.remove("streaming");
  if (failed) {
    out.classList.add("error");
    span.textContent = reply ? reply + "\n[error: " + failed + "]" : "error: " + failed;
    if (!reply) state.messages.pop();            // keep the conversation valid for the next turn
  }
  if (reply) state.messages.push({ role: "assistant", content: reply });
  out.dataset.finish = finish || (failed ? "error" : "");
  const meta = document.createElement("div");
  meta.className = "meta";
  const secs = ((performance.now() - t0) / 1000).toFixed(2);
  meta.textContent = usage
    ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens · ${secs} s · ${finish}`
    : `${secs} s${finish ? " · " + finish : ""}`;
  out.append(meta);
  setBusy(false);
}

function setBusy(b) {
  state.busy = b;
  $("send").disabled = b;
  $("stop").hidden = !b;
  setStatus(b ? "generating..." : "ready", "ok");
}

function clearAll() {
  if (state.controller) state.controller.abort();
  state.messages = [];
  state.pending = [];
  drawPending();
  $("log").replaceChildren();
  const p = document.createElement("p");
  p.id = "empty-hint";
  p.className = "hint";
  p.textContent = "Conversation cleared. Pick, paste or drop a picture and ask away.";
  $("log").append(p);
}

// ---------------------------------------------------------------- wiring

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
});
$("file").addEventListener("change", async (e) => { await addFiles(e.target.files); e.target.value = ""; });
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("clear").addEventListener("click", clearAll);
document.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files || [])];
  if (files.length) { e.preventDefault(); addFiles(files); }
});
document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  addFiles([...e.dataTransfer.files]);
});

init();
