// The depth decoder against blobs the Rust encoder wrote (`xoq vectors`), bit for bit, and
// property tests: random pictures round-trip through a test-only encoder, and random or
// damaged bytes either decode to a whole picture or throw CodecError, never hang. The PRNG
// is seeded so a failure can be replayed with XOQ_FUZZ_SEED.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";
import { deflateRawSync } from "node:zlib";

import * as xoq from "../dist/index.js";

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

// Where the vectors come from, as in codec.test.mjs.
function loadVectors() {
  if (process.env.XOQ_VECTORS) return JSON.parse(readFileSync(process.env.XOQ_VECTORS, "utf8"));
  const bin = process.env.XOQ_BIN ? resolve(process.env.XOQ_BIN) : resolve(pkgDir, "../target/debug/xoq");
  try {
    return JSON.parse(execFileSync(bin, ["vectors"], { encoding: "utf8", timeout: 30_000 }));
  } catch (e) {
    throw new Error(`cannot get the depth test vectors from \`${bin} vectors\` (${e.message}): build it (cargo build -p xoq) or set XOQ_BIN / XOQ_VECTORS`);
  }
}

const V = loadVectors();
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));
const pixelsOf = (s) => {
  const b = unhex(s);
  return Uint16Array.from({ length: b.length / 2 }, (_, i) => b[2 * i] | (b[2 * i + 1] << 8));
};

// Test-only RVL encoder, written from the format description; checked against the Rust
// bytes below before it is trusted for the round-trip properties.
function encodeRvl(data) {
  const nibbles = [];
  const vle = (v) => {
    for (;;) {
      const chunk = v & 7;
      v = Math.floor(v / 8);
      if (v === 0) return void nibbles.push(chunk);
      nibbles.push(chunk | 8);
    }
  };
  let prev = 0;
  for (let i = 0; i < data.length; ) {
    let z = 0;
    while (i + z < data.length && data[i + z] === 0) z++;
    vle(z);
    i += z;
    let nz = 0;
    while (i + nz < data.length && data[i + nz] !== 0) nz++;
    vle(nz);
    for (let k = 0; k < nz; k++, i++) {
      const d = data[i] - prev;
      vle(d >= 0 ? 2 * d : -2 * d - 1);
      prev = data[i];
    }
  }
  if (nibbles.length % 2) nibbles.push(0);
  return Uint8Array.from({ length: nibbles.length / 2 }, (_, j) => (nibbles[2 * j] << 4) | nibbles[2 * j + 1]);
}

function blobOf(codec, w, h, data) {
  let payload;
  if (codec === 0) payload = new Uint8Array(new Uint16Array(data).buffer); // tests run little-endian
  else if (codec === 1) payload = encodeRvl(data);
  else payload = new Uint8Array(deflateRawSync(encodeRvl(data), { level: 1 }));
  const b = new Uint8Array(5 + payload.length);
  b.set([codec, w >> 8, w & 255, h >> 8, h & 255]);
  b.set(payload, 5);
  return b;
}

// Does this runtime's DecompressionStream refuse bytes after the deflate end, as the spec
// says (browsers, newer Node) or ignore them (Node 20)?
async function refusesTrailingDeflate() {
  const ds = new DecompressionStream("deflate-raw");
  const w = ds.writable.getWriter();
  w.write(new Uint8Array([...deflateRawSync(Buffer.from("a")), 0])).then(() => w.close()).catch(() => {});
  try {
    for await (const _ of ds.readable);
    return false;
  } catch {
    return true;
  }
}

test("depth vectors are present and cover every codec", () => {
  assert.ok(Array.isArray(V.depth) && V.depth.length >= 20, "vectors lack depth");
  assert.ok(Array.isArray(V.depth_bad) && V.depth_bad.length >= 10, "vectors lack depth_bad");
  assert.deepEqual(new Set(V.depth.map((v) => v.codec)), new Set([0, 1, 2]));
});

test("Rust depth blobs decode bit-exact", async () => {
  for (const v of V.depth) {
    const label = `${v.name} codec ${v.codec}`;
    const img = await xoq.decodeDepth(unhex(v.blob));
    assert.equal(img.width, v.width, label);
    assert.equal(img.height, v.height, label);
    assert.ok(img.data instanceof Uint16Array, label);
    assert.deepEqual(img.data, pixelsOf(v.pixels), label);
  }
});

test("the test encoder writes the Rust bytes (raw and RVL)", () => {
  for (const v of V.depth.filter((v) => v.codec < 2)) {
    const got = blobOf(v.codec, v.width, v.height, pixelsOf(v.pixels));
    assert.equal(Buffer.from(got).toString("hex"), v.blob, `${v.name} codec ${v.codec}`);
  }
  // The Rust crate's documented snapshot.
  assert.equal(Buffer.from(blobOf(1, 5, 1, [0, 0, 1000, 1001, 0])).toString("hex"), "0100050001228af32100");
});

test("damaged depth blobs are refused with CodecError", async (t) => {
  const strict = await refusesTrailingDeflate();
  for (const v of V.depth_bad) {
    if (v.after_deflate && !strict) {
      t.diagnostic(`${v.name}: this runtime's DecompressionStream ignores bytes after the deflate end`);
      continue;
    }
    await assert.rejects(xoq.decodeDepth(unhex(v.hex)), xoq.CodecError, v.name);
  }
});

test("decodeDepth refuses pictures over the caller's limit before decoding", async () => {
  const blob = blobOf(1, 10, 10, Array.from({ length: 100 }, (_, i) => i + 1));
  assert.equal((await xoq.decodeDepth(blob, 100)).data.length, 100);
  await assert.rejects(xoq.decodeDepth(blob, 99), /over the limit/);
  // A deflate bomb under a valid header: a megabyte of zeros declared as 2x2.
  const bomb = new Uint8Array([2, 0, 2, 0, 2, ...deflateRawSync(Buffer.alloc(1 << 20), { level: 9 })]);
  await assert.rejects(xoq.decodeDepth(bomb), /inflates past/);
});

test("decodeRvl is exact on the format's edges", () => {
  assert.deepEqual(xoq.decodeRvl(new Uint8Array(0), 0), new Uint16Array(0));
  assert.deepEqual(xoq.decodeRvl(Uint8Array.of(0x22, 0x8a, 0xf3, 0x21, 0x00), 5), Uint16Array.of(0, 0, 1000, 1001, 0));
  // 1 → 65535 → 1: the largest differences both ways.
  const edge = Uint16Array.of(1, 65535, 1, 0, 65535);
  assert.deepEqual(xoq.decodeRvl(encodeRvl(edge), 5), edge);
  assert.throws(() => xoq.decodeRvl(new Uint8Array(0), 1), /ends before/);
  assert.throws(() => xoq.decodeRvl(new Uint8Array(100), 1), /longer than any picture/);
  assert.throws(() => xoq.decodeRvl(new Uint8Array(0), -1), xoq.CodecError);
});

test("relay depth track frames split into time, number and blob", () => {
  const blob = blobOf(1, 1, 1, [7]);
  const payload = new Uint8Array(16 + blob.length);
  const view = new DataView(payload.buffer);
  view.setBigUint64(0, 1_764_000_000_123_456n);
  view.setBigUint64(8, 2n ** 64n - 1n);
  payload.set(blob, 16);
  const f = xoq.parseDepthTrackFrame(payload);
  assert.equal(f.timestampUs, 1_764_000_000_123_456n);
  assert.equal(f.seq, 2n ** 64n - 1n);
  assert.deepEqual(f.blob, blob);
  // A view into a larger buffer reads from its own offset.
  const shifted = new Uint8Array(payload.length + 3);
  shifted.set(payload, 3);
  assert.equal(xoq.parseDepthTrackFrame(shifted.subarray(3)).timestampUs, 1_764_000_000_123_456n);
  assert.throws(() => xoq.parseDepthTrackFrame(new Uint8Array(15)), xoq.CodecError);
});

test("the catalog's depth description, and deprojection", () => {
  const intr = { width: 640, height: 480, fx: 600, fy: 610, ppx: 320, ppy: 240, model: "none", coeffs: [0, 0, 0, 0, 0] };
  const catalog = {
    xoq: { epochUs: 5, depth: { scale: 0.001, name: "Intel RealSense D435", serial: "123", depthIntrinsics: intr, colorIntrinsics: { ...intr, fx: 615 } } },
    binary: { tracks: { depth: { mode: "snapshot", mime: xoq.DEPTH_MIME } } },
  };
  const info = xoq.depthInfoFromCatalog(catalog);
  assert.deepEqual(info, { scale: 0.001, depth: intr, color: { ...intr, fx: 615 }, name: "Intel RealSense D435", serial: "123" });
  assert.ok(catalog.binary.tracks[xoq.DEPTH_TRACK]);
  assert.equal(xoq.depthInfoFromCatalog({}), undefined);
  assert.equal(xoq.depthInfoFromCatalog(undefined), undefined);
  assert.equal(xoq.depthInfoFromCatalog({ xoq: { depth: { ...catalog.xoq.depth, scale: "1" } } }), undefined);
  assert.equal(xoq.depthInfoFromCatalog({ xoq: { depth: { ...catalog.xoq.depth, depthIntrinsics: { ...intr, fx: null } } } }), undefined);
  // Descriptive fields may be missing.
  const bare = { width: 4, height: 2, fx: 2, fy: 2, ppx: 2, ppy: 1 };
  const minimal = xoq.depthInfoFromCatalog({ xoq: { depth: { scale: 0.0001, depthIntrinsics: bare, colorIntrinsics: bare } } });
  assert.deepEqual(minimal?.depth, { ...bare, model: "none", coeffs: [0, 0, 0, 0, 0] });
  assert.equal(minimal?.name, "");

  assert.deepEqual(xoq.deproject(intr, 320, 240, 2), [0, 0, 2]);
  const [x, y, z] = xoq.deproject(intr, 920, 0, 1.5);
  assert.equal(z, 1.5);
  assert.ok(Math.abs(x - 1.5) < 1e-12 && Math.abs(y - (-240 / 610) * 1.5) < 1e-12);
});

// --- properties ------------------------------------------------------------------------------

const SEED = Number(process.env.XOQ_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
const seedNote = `XOQ_FUZZ_SEED=${SEED}`;

// mulberry32, as in fuzz.test.mjs.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
const rand = rng(SEED);
const int = (n) => Math.floor(rand() * n);
const bytes = (n) => Uint8Array.from({ length: n }, () => int(256));

function randomPicture() {
  const w = int(40);
  const h = int(40);
  const zeroPct = int(100);
  const smooth = rand() < 0.5;
  let v = 1 + int(65535);
  const data = Uint16Array.from({ length: w * h }, () => {
    if (int(100) < zeroPct) return 0;
    v = smooth ? Math.min(65535, Math.max(1, v + int(21) - 10)) : 1 + int(65535);
    return v;
  });
  return { w, h, data };
}

// Every decode must settle quickly: a hang fails the test instead of stalling it.
function settles(p, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`decodeDepth hung on ${what} (${seedNote})`)), 5_000);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

test(`random pictures round-trip in every codec (${seedNote})`, async () => {
  for (let i = 0; i < 300; i++) {
    const { w, h, data } = randomPicture();
    const codec = i % 3;
    const img = await xoq.decodeDepth(blobOf(codec, w, h, data));
    assert.equal(img.width, w);
    assert.equal(img.height, h);
    assert.deepEqual(img.data, data, `${w}x${h} codec ${codec} (${seedNote})`);
  }
});

// Random bytes, valid headers over random payloads, and valid blobs with a few bytes changed,
// cut or appended.
function randomInput() {
  const mode = int(3);
  if (mode === 0) return bytes(int(200));
  if (mode === 1) {
    const b = bytes(5 + int(300));
    b.set([int(4), 0, int(30), 0, int(30)]);
    return b;
  }
  const { w, h, data } = randomPicture();
  let b = blobOf(int(3), w, h, data);
  const edits = 1 + int(3);
  for (let i = 0; i < edits && b.length > 0; i++) {
    const op = int(3);
    if (op === 0) b[int(b.length)] = int(256);
    else if (op === 1) b = b.subarray(0, int(b.length));
    else b = new Uint8Array([...b, ...bytes(1 + int(3))]);
  }
  return b;
}

test(`decodeDepth is total on random and damaged blobs (${seedNote})`, { timeout: 120_000 }, async (t) => {
  const CASES = 3_000;
  let decoded = 0;
  let refused = 0;
  for (let i = 0; i < CASES; i++) {
    const input = randomInput();
    const what = Buffer.from(input).toString("hex");
    try {
      const img = await settles(xoq.decodeDepth(input, 1 << 16), what);
      decoded++;
      assert.equal(img.data.length, img.width * img.height, what);
      // What decodes re-encodes (RVL) to the same pixels.
      assert.deepEqual((await xoq.decodeDepth(blobOf(1, img.width, img.height, img.data))).data, img.data, what);
    } catch (e) {
      if (!(e instanceof xoq.CodecError)) assert.fail(`decodeDepth(${what}) threw ${e?.name}: ${e?.message} (${seedNote})`);
      refused++;
    }
  }
  t.diagnostic(`${decoded} decoded, ${refused} refused`);
  // The generator must reach both outcomes, or the test proves little.
  assert.ok(decoded > CASES / 50, `only ${decoded} inputs decoded`);
  assert.ok(refused > CASES / 20, `only ${refused} inputs refused`);
});

test("a VGA depth frame decodes in well under a frame time", async (t) => {
  const w = 640;
  const h = 480;
  const data = Uint16Array.from({ length: w * h }, (_, i) => ((i % w) < 8 ? 0 : 800 + Math.floor(i / w) + Math.floor((i % w) / 64)));
  const blob = blobOf(2, w, h, data);
  const t0 = performance.now();
  const img = await xoq.decodeDepth(blob);
  const ms = performance.now() - t0;
  assert.deepEqual(img.data, data);
  t.diagnostic(`640x480 RVL+deflate: ${blob.length} bytes, decoded in ${ms.toFixed(1)} ms`);
});
