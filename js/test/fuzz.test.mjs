// Property tests without dependencies: the decoders are total (only CodecError, bounded
// buffering) on random and near-valid input, and valid frames round-trip. The PRNG is
// seeded so a failure can be replayed with XOQ_FUZZ_SEED.

import assert from "node:assert/strict";
import test from "node:test";

import * as xoq from "../dist/index.js";

const SEED = Number(process.env.XOQ_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
const CASES = 20_000;

// mulberry32: tiny, fast, good enough to spread test inputs.
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
const pick = (xs) => xs[int(xs.length)];
const bytes = (n) => Uint8Array.from({ length: n }, () => int(256));

function randomFrame() {
  const kind = int(5);
  const ts = BigInt(int(2 ** 32)) * BigInt(int(2 ** 32)) + BigInt(int(2 ** 32));
  const timestampUs = ts & ((1n << 64n) - 1n);
  const extended = rand() < 0.5;
  const id = extended ? int(0x20000000) : int(0x800);
  const base = { id, extended, rtr: false, error: false, fd: false, brs: false, esi: false, rtrLen: 0, timestampUs };
  switch (kind) {
    case 0:
      return { ...base, data: bytes(int(9)) };
    case 1:
      return { ...base, fd: true, brs: rand() < 0.5, esi: rand() < 0.5, data: bytes(pick([0, 1, 5, 8, 12, 16, 20, 24, 32, 48, 64])) };
    case 2:
      return { ...base, rtr: true, rtrLen: int(9), data: new Uint8Array(0) };
    case 3:
      return { ...base, extended: false, error: true, id: int(0x20000000), data: bytes(int(9)) };
    default:
      return { ...base, data: new Uint8Array(0) };
  }
}

// Inputs biased towards the interesting region: plausible counts, valid flags, and valid
// batches with a few bytes changed, cut or appended.
function randomInput() {
  const mode = int(3);
  if (mode === 0) return bytes(int(301));
  if (mode === 1) {
    const b = bytes(int(300) + 1);
    b[0] = int(8);
    if (b.length > 1) b[1] = pick([0, 1, 2, 8, 0x18, 0x28, 4, int(256)]);
    if (b.length > 14) b[14] = int(10);
    return b;
  }
  const frames = Array.from({ length: int(4) }, randomFrame);
  let b = xoq.encodeBatch(frames);
  const edits = int(4);
  for (let i = 0; i < edits && b.length > 0; i++) {
    const op = int(3);
    if (op === 0) b[int(b.length)] = int(256);
    else if (op === 1) b = b.subarray(0, int(b.length));
    else b = new Uint8Array([...b, ...bytes(int(4))]);
  }
  return b.subarray(0, 300);
}

const seedNote = `XOQ_FUZZ_SEED=${SEED}`;

test(`decodeBatch and StatusParser are total on ${CASES} random inputs (${seedNote})`, () => {
  let decoded = 0;
  let refused = 0;
  let packets = 0;
  for (let i = 0; i < CASES; i++) {
    const input = randomInput();
    try {
      const frames = xoq.decodeBatch(input);
      decoded++;
      // Anything accepted is valid and re-encodes to what decodes the same.
      const again = xoq.encodeBatch(frames);
      assert.deepEqual(xoq.decodeBatch(again), frames);
      if (input[0] < 0x40) assert.deepEqual(again, input, "minimal count varint: identical bytes");
    } catch (e) {
      if (!(e instanceof xoq.CodecError)) {
        assert.fail(`decodeBatch(${Buffer.from(input).toString("hex")}) threw ${e?.name}: ${e?.message} (${seedNote})`);
      }
      refused++;
    }
    const p = new xoq.StatusParser();
    for (let o = 0; o < input.length; ) {
      const n = 1 + int(40);
      for (const s of p.push(input.subarray(o, o + n))) {
        packets++;
        assert.ok(s.params.length <= 253 && s.id !== 0xff);
      }
      assert.ok(p.pending <= 259, `parser holds ${p.pending} bytes (${seedNote})`);
      o += n;
    }
  }
  // The generator must reach both outcomes, or the test proves little.
  assert.ok(decoded > CASES / 20, `only ${decoded} inputs decoded`);
  assert.ok(refused > CASES / 20, `only ${refused} inputs refused`);
  assert.ok(packets >= 0);
});

test(`random valid frame lists round-trip (${seedNote})`, () => {
  for (let i = 0; i < 2_000; i++) {
    const frames = Array.from({ length: int(20) }, randomFrame);
    assert.deepEqual(xoq.decodeBatch(xoq.encodeBatch(frames)), frames);
  }
});

test(`StatusParser finds packets between random garbage (${seedNote})`, () => {
  for (let i = 0; i < 2_000; i++) {
    const id = int(0xfe);
    const error = int(256);
    const params = bytes(int(10));
    // A status packet has the instruction layout with the error byte in place of instr.
    const packet = xoq.instruction(id, error, params);
    const noise = bytes(int(20)).map((b) => (b === 0xff ? 0 : b));
    const p = new xoq.StatusParser();
    const got = [...p.push(noise), ...p.push(packet)];
    assert.deepEqual(got, [{ id, error, params }]);
  }
});

// --- relay session protocol ----------------------------------------------------------------

const u64 = () => (BigInt(int(2 ** 32)) << 32n) | BigInt(int(2 ** 32));
const text = (n) => {
  const alphabet = ["a", "0", "f", " ", "é", "—", "\u{1F916}", "\u0000"];
  let s = "";
  for (let i = 0; i < n; i++) s += pick(alphabet);
  return s;
};
const hexWriter = () => Array.from({ length: int(17) }, () => "0123456789abcdef"[int(16)]).join("");

function randomCtl() {
  switch (int(8)) {
    case 0:
      return { kind: "hello", writer: hexWriter(), nonce: u64(), writes: rand() < 0.5, serverUs: u64() };
    case 1:
      return { kind: "synced", writer: hexWriter(), nonce: u64(), dataGroup: u64() };
    case 2:
      return { kind: "pong", writer: hexWriter(), id: int(2 ** 32), clientUs: u64(), serverUs: u64() };
    case 3:
      return { kind: "refused", writer: hexWriter(), code: int(65536), message: text(int(60)) };
    case 4:
      return { kind: "busState", code: int(256) };
    case 5:
      return { kind: "deviceLost", reason: text(int(30)) };
    case 6:
      return { kind: "deviceRestored" };
    default:
      return { kind: "bye", reason: text(int(30)) };
  }
}

function randomWriterMsg() {
  switch (int(3)) {
    case 0:
      return { kind: "data", payload: bytes(int(40)) };
    case 1:
      return { kind: "sync", nonce: u64() };
    default:
      return { kind: "ping", id: int(2 ** 32), clientUs: u64() };
  }
}

// Valid encodings with a few bytes changed, cut or appended, random bytes, and plausible
// heads (a known kind, a string length around the limits).
function mutate(b) {
  let out = b;
  const edits = int(4);
  for (let i = 0; i < edits && out.length > 0; i++) {
    const op = int(3);
    if (op === 0) out[int(out.length)] = int(256);
    else if (op === 1) out = out.subarray(0, int(out.length));
    else out = new Uint8Array([...out, ...bytes(int(4))]);
  }
  return out;
}

function relayInput(encodeValid) {
  const mode = int(3);
  if (mode === 0) return bytes(int(97));
  if (mode === 1) {
    const b = bytes(int(96) + 1);
    b[0] = int(10);
    if (b.length > 1) b[1] = pick([0, 1, 16, 63, 64, 0x44, 0x40, int(256)]);
    return b;
  }
  return mutate(encodeValid().slice());
}

test(`relay decoders are total on ${CASES} random inputs each (${seedNote})`, () => {
  const outcomes = { ctl: [0, 0], writer: [0, 0] };
  for (let i = 0; i < CASES; i++) {
    for (const [name, decode, encode, valid] of [
      ["ctl", xoq.decodeCtl, xoq.encodeCtl, () => xoq.encodeCtl(randomCtl())],
      ["writer", xoq.decodeWriterMsg, xoq.encodeWriterMsg, () => xoq.encodeWriterMsg(randomWriterMsg())],
    ]) {
      const input = relayInput(valid);
      try {
        const m = decode(input);
        outcomes[name][0]++;
        // Anything accepted re-encodes to bytes that decode the same (varints may have been
        // non-minimal, so the bytes themselves may differ).
        assert.deepEqual(decode(encode(m)), m);
      } catch (e) {
        if (!(e instanceof xoq.CodecError)) {
          assert.fail(`${name} decode(${Buffer.from(input).toString("hex")}) threw ${e?.name}: ${e?.message} (${seedNote})`);
        }
        outcomes[name][1]++;
      }
    }
  }
  for (const [name, [ok, refused]] of Object.entries(outcomes)) {
    assert.ok(ok > CASES / 20, `only ${ok} ${name} inputs decoded`);
    assert.ok(refused > CASES / 20, `only ${refused} ${name} inputs refused`);
  }
});

test(`random relay messages round-trip (${seedNote})`, () => {
  for (let i = 0; i < 5_000; i++) {
    const c = randomCtl();
    const back = xoq.decodeCtl(xoq.encodeCtl(c));
    // Strings over 1024 UTF-8 bytes would be cut; these are shorter.
    assert.deepEqual(back, c);
    const w = randomWriterMsg();
    assert.deepEqual(xoq.decodeWriterMsg(xoq.encodeWriterMsg(w)), w);
  }
  // A long string is cut on a character boundary and still decodes.
  const long = xoq.decodeCtl(xoq.encodeCtl({ kind: "bye", reason: "\u{1F916}".repeat(300) }));
  assert.equal(new TextEncoder().encode(long.reason).length, 1024);
  assert.equal(long.reason, "\u{1F916}".repeat(256));
});
