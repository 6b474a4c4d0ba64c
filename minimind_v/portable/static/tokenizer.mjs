// Byte-level BPE from a Hugging Face tokenizer.json, and the ChatML prompt: the ids the Python side makes.
//
// Encoding: the text is split at added tokens (longest first), every other piece is cut by the byte-level
// pre-tokenizer's pattern, each pre-token's UTF-8 bytes are mapped to the printable byte alphabet, and the
// merges are applied by rank. Written text (what a person typed) keeps the conversation's control strings
// (<|im_start|>, <|im_end|>, <|endoftext|>, <|image_pad|>) as plain characters, as data/chatml.py does:
// the written text is cut at them and each is byte-level BPE'd on its own.
// Decoding: the token strings joined, mapped back to bytes, read as UTF-8; special tokens are skipped.

const PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

function byteAlphabet() {
  // bytes that print as themselves keep their code point; the rest are moved past 255, in order
  const keep = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const enc = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) enc[b] = keep.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  const dec = new Map(enc.map((c, b) => [c, b]));
  return { enc, dec };
}

export class Tokenizer {
  constructor(json) {
    const model = json.model;
    if (model.type !== "BPE") throw new Error(`tokenizer model ${model.type} is not byte-level BPE`);
    this.vocab = new Map(Object.entries(model.vocab));
    this.idToToken = new Map();
    for (const [t, i] of this.vocab) this.idToToken.set(i, t);
    this.ranks = new Map();
    model.merges.forEach((m, r) => {
      const [a, b] = Array.isArray(m) ? m : m.split(" ");
      this.ranks.set(a + " " + b, r);
    });
    this.added = json.added_tokens.map((t) => ({ id: t.id, content: t.content, special: t.special }));
    this.added.sort((x, y) => y.content.length - x.content.length);
    for (const t of this.added) this.idToToken.set(t.id, t.content);
    this.special = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    this.bytes = byteAlphabet();
    this.cache = new Map();
    this.utf8 = new TextEncoder();
    const id = (s) => {
      const t = this.added.find((a) => a.content === s);
      if (!t) throw new Error(`tokenizer has no ${s} token`);
      return t.id;
    };
    this.imStart = id("<|im_start|>");
    this.imEnd = id("<|im_end|>");
    this.pad = id("<|endoftext|>");
    this.imagePad = id("<|image_pad|>");
    this.control = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|image_pad|>"];
  }

  bpe(word) {
    if (this.cache.has(word)) return this.cache.get(word);
    let parts = Array.from(word);
    while (parts.length > 1) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i < parts.length - 1; i++) {
        const r = this.ranks.get(parts[i] + " " + parts[i + 1]);
        if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
      }
      if (best < 0) break;
      const a = parts[best], b = parts[best + 1], out = [];
      for (let i = 0; i < parts.length; i++) {
        if (i < parts.length - 1 && parts[i] === a && parts[i + 1] === b) { out.push(a + b); i++; }
        else out.push(parts[i]);
      }
      parts = out;
    }
    const ids = parts.map((p) => {
      const i = this.vocab.get(p);
      if (i === undefined) throw new Error(`no token for ${JSON.stringify(p)}`);
      return i;
    });
    this.cache.set(word, ids);
    return ids;
  }

  encodePlain(text) {
    const ids = [];
    for (const m of text.matchAll(PATTERN)) {
      const mapped = Array.from(this.utf8.encode(m[0]), (b) => this.bytes.enc[b]).join("");
      ids.push(...this.bpe(mapped));
    }
    return ids;
  }

  // split at added tokens; written text is first cut at the control strings, which become plain text
  // pieces of their own (as tokenizer.py's encode_written_with_offsets)
  encode(text, written = false) {
    if (written && this.hasControl(text)) {
      const ids = [];
      const esc = this.control.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
      for (const part of text.split(new RegExp(`(${esc.join("|")})`))) {
        if (!part) continue;
        ids.push(...(this.control.includes(part) ? this.encodePlain(part) : this.encode(part)));
      }
      return ids;
    }
    const tokens = this.added;
    const ids = [];
    let rest = text;
    while (rest.length) {
      let at = -1, tok = null;
      for (const t of tokens) {
        const i = rest.indexOf(t.content);
        if (i >= 0 && (at < 0 || i < at || (i === at && t.content.length > tok.content.length))) { at = i; tok = t; }
      }
      if (at < 0) { ids.push(...this.encodePlain(rest)); break; }
      if (at > 0) ids.push(...this.encodePlain(rest.slice(0, at)));
      ids.push(tok.id);
      rest = rest.slice(at + tok.content.length);
    }
    return ids;
  }

  hasControl(text) {
    return text.includes("<") && this.control.some((c) => text.includes(c));
  }

  // ChatML with the generation prompt; `<image>` in a user turn becomes `imageTokens` x <|image_pad|>
  chatIds(messages, imageTokens) {
    const segs = [];
    for (const m of messages) {
      segs.push([false, `<|im_start|>${m.role}\n`]);
      if (m.role === "system") segs.push([true, m.content]);
      else m.content.split("<image>").forEach((piece, k) => {
        if (k) segs.push([false, "<|image_pad|>".repeat(imageTokens)]);
        if (piece) segs.push([true, piece]);
      });
      segs.push([false, "<|im_end|>\n"]);
    }
    segs.push([false, "<|im_start|>assistant\n"]);
    if (!segs.some(([w, p]) => w && this.hasControl(p))) return this.encode(segs.map(([, p]) => p).join(""));
    return segs.flatMap(([w, p]) => this.encode(p, w));
  }

  decodeBytes(ids) {
    const out = [];
    for (const i of ids) {
      if (this.special.has(i)) continue;
      const t = this.idToToken.get(i);
      if (t === undefined) continue;
      if (this.added.some((a) => a.id === i)) { out.push(...this.utf8.encode(t)); continue; }
      for (const c of t) out.push(this.bytes.dec.get(c));
    }
    return new Uint8Array(out);
  }
}

// Generated ids -> text pieces, whole characters only (a token may end inside a UTF-8 character).
export class TextStream {
  constructor(tok) { this.tok = tok; this.pending = []; this.decoder = new TextDecoder(); }
  push(id) {
    this.pending.push(id);
    const piece = this.decoder.decode(this.tok.decodeBytes(this.pending));
    if (piece && !piece.endsWith("\ufffd")) { this.pending = []; return piece; }
    return "";
  }
  finish() {
    const piece = this.pending.length ? this.decoder.decode(this.tok.decodeBytes(this.pending)) : "";
    this.pending = [];
    return piece;
  }
}
