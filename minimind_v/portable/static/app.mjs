// The page: load the ONNX folder with onnxruntime-web (WebAssembly, one thread), then chat about a picture.
// The decoder loop is runtime.py's: the whole prompt first with an empty cache, then one token per step
// with the cache the last step returned; greedy at temperature 0, else temperature + top-p sampling.
// What the page measured is kept in window.webState (time to first token, tokens/s, the ids).
import * as ort from "./ort/ort.wasm.min.mjs";
import { encoderInputs, readPicture } from "./pixels.mjs";
import { TextStream, Tokenizer } from "./tokenizer.mjs";

ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
ort.env.wasm.numThreads = 1;          // a plain static server sends no cross-origin isolation headers

const $ = (id) => document.getElementById(id);
const state = (window.webState = { ready: false, messages: [], runs: [] });
let settings, tok, decoder, vision, picture = null, pending = null;

async function load() {
  settings = await (await fetch("./model/minimind_v_onnx.json")).json();
  if (settings.format !== "minimind-v-onnx" || settings.version !== 1)
    throw new Error("this page reads minimind-v-onnx version 1; export the model again");
  tok = new Tokenizer(await (await fetch("./model/tokenizer.json")).json());
  const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  decoder = await ort.InferenceSession.create(`./model/${settings.files.decoder}`, opts);
  if (settings.files.vision) vision = await ort.InferenceSession.create(`./model/${settings.files.vision}`, opts);
  state.ready = true;
  $("status").textContent = "ready";
  $("send").disabled = false;
}

async function visualTokens(pic) {
  const spec = settings.pixels, m = settings.model;
  const x = encoderInputs(pic.rgb, pic.width, pic.height, spec);
  const feeds = { pixel_values: new ort.Tensor("float32", x.values, [1, x.count, x.width]) };
  if (spec.encoder_class === "siglip2") {
    feeds.pixel_attention_mask = new ort.Tensor("int64", x.mask, [1, x.count]);
    feeds.spatial_shapes = new ort.Tensor("int64", x.shapes, [1, 2]);
  }
  const out = await vision.run(feeds);
  return out.visual;
}

function sample(logits, offset, vocab, temperature, topP) {
  if (temperature <= 0) {
    let best = 0, bestV = -Infinity;
    for (let i = 0; i < vocab; i++) if (logits[offset + i] > bestV) { bestV = logits[offset + i]; best = i; }
    return best;
  }
  const idx = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[offset + b] - logits[offset + a]);
  const top = logits[offset + idx[0]];
  const p = idx.map((i) => Math.exp((logits[offset + i] - top) / temperature));
  const total = p.reduce((a, b) => a + b, 0);
  let kept = 0, n = 0;
  while (n < p.length && kept < topP * total) kept += p[n++];
  let r = Math.random() * kept;
  for (let k = 0; k < n; k++) { r -= p[k]; if (r <= 0) return idx[k]; }
  return idx[n - 1];
}

async function* generate(ids, visual, params) {
  const m = settings.model, L = m.num_hidden_layers, kv = m.num_key_value_heads, hd = m.head_dim;
  const empty = new ort.Tensor("float32", new Float32Array(m.image_token_len * m.hidden_size), [1, m.image_token_len, m.hidden_size]);
  const i64 = (arr) => BigInt64Array.from(arr, (v) => BigInt(v));
  let past = {};
  for (let i = 0; i < L; i++) {
    past[`past_key_${i}`] = new ort.Tensor("float32", new Float32Array(0), [1, kv, 0, hd]);
    past[`past_value_${i}`] = new ort.Tensor("float32", new Float32Array(0), [1, kv, 0, hd]);
  }
  let feed = ids, total = ids.length;
  for (let step = 0; step < params.maxTokens; step++) {
    const t = feed.length;
    const out = await decoder.run({
      input_ids: new ort.Tensor("int64", i64(feed), [1, t]),
      visual: step === 0 && visual ? visual : empty,
      attention_mask: new ort.Tensor("int64", i64(new Array(total).fill(1)), [1, total]),
      position_ids: new ort.Tensor("int64", i64(Array.from({ length: t }, (_, k) => total - t + k)), [1, t]),
      ...past,
    });
    const next = sample(out.logits.data, (t - 1) * m.vocab_size, m.vocab_size, params.temperature, params.topP);
    yield next;
    if (next === m.eos_token_id) return;
    past = {};
    for (let i = 0; i < L; i++) {
      past[`past_key_${i}`] = out[`present_key_${i}`];
      past[`past_value_${i}`] = out[`present_value_${i}`];
    }
    feed = [next];
    total += 1;
  }
}

function bubble(role, text) {
  const d = document.createElement("div");
  d.className = `msg ${role}`;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  d.appendChild(body);
  $("log").appendChild(d);
  return d;
}

async function send() {
  const q = $("prompt").value.trim();
  if (!q || !state.ready) return;
  $("send").disabled = true;
  $("prompt").value = "";
  if (pending) { picture = pending; pending = null; }
  const content = (state.messages.length === 0 && picture ? "<image>\n" : "") + q;
  state.messages.push({ role: "user", content });
  bubble("user", q);
  const d = bubble("assistant", "");
  const body = d.querySelector(".text");
  const params = { temperature: Number($("temperature").value), topP: Number($("top_p").value),
                   maxTokens: Number($("max_tokens").value) };
  const t0 = performance.now();
  const usesPicture = state.messages.some((m) => m.content.includes("<image>"));
  const ids = tok.chatIds(state.messages, settings.model.image_token_len);
  const problem = usesPicture && !vision ? "this model was exported without its vision encoder: ask without a picture"
    : ids.length + params.maxTokens > settings.model.max_context
      ? `the conversation (${ids.length} tokens) and ${params.maxTokens} new tokens exceed the model's ` +
        `${settings.model.max_context}: clear it or ask for fewer tokens` : null;
  if (problem) {
    body.textContent = problem;
    d.classList.add("error");
    state.messages.pop();
    $("send").disabled = false;
    return;
  }
  const visual = usesPicture ? await visualTokens(picture) : null;
  const stream = new TextStream(tok);
  const out = [];
  let first = null, reply = "", chunks = 0;
  for await (const id of generate(ids, visual, params)) {
    if (first === null) first = performance.now();
    if (id === settings.model.eos_token_id) break;
    out.push(id);
    const piece = stream.push(id);
    if (piece) { reply += piece; body.textContent = reply; chunks++; d.dataset.chunks = chunks; }
    await new Promise((r) => setTimeout(r, 0));          // let the page paint the piece
  }
  reply += stream.finish();
  body.textContent = reply;
  const end = performance.now();
  const ttft = first - t0, rate = out.length > 1 ? (out.length - 1) / ((end - first) / 1000) : 0;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${out.length} tokens · first token ${ttft.toFixed(0)} ms · ${rate.toFixed(1)} tokens/s`;
  d.appendChild(meta);
  state.messages.push({ role: "assistant", content: reply });
  state.runs.push({ ids: out, prompt_ids: ids.length, ttft_ms: ttft, tokens_per_s: rate, text: reply });
  d.dataset.done = "1";
  $("send").disabled = false;
}

$("file").addEventListener("change", async (e) => {
  const f = e.target.files[0];
  if (!f) return;
  pending = await readPicture(f);
  $("preview").src = URL.createObjectURL(f);
  $("preview").style.display = "block";
  state.messages = [];                        // a new picture starts a new conversation
  $("log").textContent = "";
});
$("send").addEventListener("click", send);
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
$("clear").addEventListener("click", () => { state.messages = []; picture = pending = null; $("log").textContent = "";
                                              $("preview").style.display = "none"; });
load().catch((e) => { $("status").textContent = `could not load the model: ${e.message}`; state.error = String(e); });
