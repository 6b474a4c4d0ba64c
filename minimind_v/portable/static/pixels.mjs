// A picture -> the vision graph's inputs, as hf/pixels.py makes them (square or NaFlex size, PIL's resize,
// (x/255 - mean)/std, p x p patches in raster order, each flattened (py, px, channel)).
//
// The resize is Pillow's 8-bit resampling: two passes (horizontal then vertical, or the other way round when
// the height shrinks by far more pixels than the width), each output pixel a weighted sum with the filter's
// weights normalised per pixel, turned into fixed-point integers (22 fraction bits), rounded and clipped to
// 0..255 after each pass. Doing the same arithmetic here gives the bytes Pillow gives.

const PRECISION_BITS = 32 - 8 - 2;
const FILTERS = {
  bilinear: { support: 1, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  bicubic: {
    support: 2, f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const taps = [];
  for (let x = 0; x < outSize; x++) {
    const center = (x + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const k = [];
    let ww = 0;
    for (let i = 0; i < xmax; i++) {
      const w = filter.f((i + xmin - center + 0.5) * ss);
      k.push(w);
      ww += w;
    }
    const fixed = k.map((w) => {
      const v = ww === 0 ? 0 : w / ww;
      return v < 0 ? Math.trunc(v * (1 << PRECISION_BITS) - 0.5) : Math.trunc(v * (1 << PRECISION_BITS) + 0.5);
    });
    taps.push({ xmin, k: fixed });
  }
  return taps;
}

const clip8 = (v) => {
  const x = Math.floor(v / (1 << PRECISION_BITS));
  return x < 0 ? 0 : x > 255 ? 255 : x;
};

// one pass along x (horizontal) or y: src (h, w, 3) -> (h, outW, 3) or (outH, w, 3)
function pass(src, w, h, out, horizontal, filter) {
  const taps = coefficients(horizontal ? w : h, out, filter);
  const ow = horizontal ? out : w, oh = horizontal ? h : out;
  const dst = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) {
    const { xmin, k } = taps[horizontal ? x : y];
    for (let c = 0; c < 3; c++) {
      let s = 1 << (PRECISION_BITS - 1);
      for (let i = 0; i < k.length; i++) {
        s += src[(horizontal ? y * w + xmin + i : (xmin + i) * w + x) * 3 + c] * k[i];
      }
      dst[(y * ow + x) * 3 + c] = clip8(s);
    }
  }
  return dst;
}

// rgb: Uint8Array (h, w, 3) -> Uint8Array (outH, outW, 3). Pillow (13.0, what this was checked against)
// runs the vertical pass first when the height loses more than twice as many pixels as the width does.
export function resize(rgb, w, h, outW, outH, resample) {
  const filter = FILTERS[resample];
  const verticalFirst = h - outH > 0 && h - outH > (w - outW) * 2;
  let img = rgb;
  if (verticalFirst) {
    if (outH !== h) img = pass(img, w, h, outH, false, filter);
    if (outW !== w) img = pass(img, w, outH, outW, true, filter);
  } else {
    if (outW !== w) img = pass(img, w, h, outW, true, filter);
    if (outH !== h) img = pass(img, outW, h, outH, false, filter);
  }
  return img;
}

// The aspect-kept NaFlex size: the largest scale whose grid holds at most maxPatches patches (bisection).
export function naflexSize(height, width, patch, maxPatches, eps = 1e-5) {
  const side = (scale, n) => Math.max(patch, Math.ceil((n * scale) / patch) * patch);
  let lo = eps / 10, hi = 100.0;
  while (hi - lo >= eps) {
    const mid = (lo + hi) / 2;
    if ((side(mid, height) / patch) * (side(mid, width) / patch) <= maxPatches) lo = mid;
    else hi = mid;
  }
  return [side(lo, height), side(lo, width)];
}

// rgb (h, w, 3) uint8 -> { pixel_values (1, P, 3pp) Float32Array, mask (1, P), shapes (1, 2), dims }
export function encoderInputs(rgb, w, h, spec) {
  const p = spec.patch_size, most = (spec.image_size / p) ** 2;
  const [th, tw] = spec.resize === "naflex" ? naflexSize(h, w, p, most) : [spec.image_size, spec.image_size];
  const img = (tw !== w || th !== h) ? resize(rgb, w, h, tw, th, spec.resample) : rgb;
  const gh = th / p, gw = tw / p, width = 3 * p * p;
  const values = new Float32Array(most * width);
  const mean = Math.fround(spec.image_mean), std = Math.fround(spec.image_std);
  for (let gy = 0; gy < gh; gy++) for (let gx = 0; gx < gw; gx++) {
    const row = (gy * gw + gx) * width;
    for (let py = 0; py < p; py++) for (let px = 0; px < p; px++) for (let c = 0; c < 3; c++) {
      const u = img[((gy * p + py) * tw + gx * p + px) * 3 + c];
      values[row + (py * p + px) * 3 + c] = Math.fround(Math.fround(Math.fround(u) / Math.fround(255)) - mean) / std;
    }
  }
  const mask = new BigInt64Array(most);
  for (let i = 0; i < gh * gw; i++) mask[i] = 1n;
  return { values, mask, shapes: new BigInt64Array([BigInt(gh), BigInt(gw)]), count: most, width };
}

// any decodable picture file -> opaque RGB bytes (transparency over white), as hf/pixels.to_rgb
export async function readPicture(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { colorSpace: "srgb", willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const a = rgba[i + 3];
    for (let c = 0; c < 3; c++) rgb[j + c] = a === 255 ? rgba[i + c] : Math.round((rgba[i + c] * a + 255 * (255 - a)) / 255);
  }
  return { rgb, width: bitmap.width, height: bitmap.height };
}
