// The JS codecs against vectors printed by the Rust codecs (`xoq vectors`), so the two
// implementations are compared byte for byte in every run.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";

import * as xoq from "../dist/index.js";

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function loadVectors() {
  const file = process.env.XOQ_VECTORS;
  if (file) {
    try {
      return JSON.parse(readFileSync(file, "utf8"));
    } catch (e) {
      throw new Error(`cannot read test vectors from XOQ_VECTORS=${file}: ${e.message}`);
    }
  }
  const bin = process.env.XOQ_BIN ? resolve(process.env.XOQ_BIN) : resolve(pkgDir, "../target/debug/xoq");
  try {
    return JSON.parse(execFileSync(bin, ["vectors"], { encoding: "utf8", timeout: 30_000 }));
  } catch (e) {
    throw new Error(
      `cannot get the codec test vectors: XOQ_VECTORS is not set and \`${bin} vectors\` failed (${e.message}). ` +
        "Build the Rust CLI (cargo build -p xoq) or set XOQ_BIN / XOQ_VECTORS.",
    );
  }
}

const V = loadVectors();

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));

function frameFromVector(f) {
  return {
    id: f.id,
    extended: f.extended,
    rtr: f.rtr,
    error: f.error,
    fd: f.fd,
    brs: f.brs,
    esi: f.esi,
    data: unhex(f.data),
    rtrLen: f.rtr_len,
    timestampUs: BigInt(f.timestamp_us),
  };
}

test("vectors are present and non-trivial", () => {
  for (const key of ["can_batches", "can_invalid", "damiao_mit", "damiao_feedback", "feetech_instructions", "feetech_status"]) {
    assert.ok(Array.isArray(V[key]) && V[key].length > 0, `vectors lack ${key}`);
  }
  assert.ok(V.damiao_special && V.damiao_limits, "vectors lack damiao_special/damiao_limits");
});

test("CAN batches decode to the Rust frames and encode to the Rust bytes", () => {
  for (const b of V.can_batches) {
    const expected = b.frames.map(frameFromVector);
    const decoded = xoq.decodeBatch(unhex(b.hex));
    assert.deepEqual(decoded, expected, b.name);
    assert.equal(hex(xoq.encodeBatch(expected)), b.hex, b.name);
  }
});

test("invalid CAN batches throw CodecError", () => {
  for (const b of V.can_invalid) {
    assert.throws(() => xoq.decodeBatch(unhex(b.hex)), xoq.CodecError, b.name);
  }
});

test("decodeBatch refuses what the protocol forbids", () => {
  const good = xoq.encodeBatch([xoq.canFrame(0x123, [1, 2, 3], { timestampUs: 7n })]);
  const bad = (mutate) => {
    const b = good.slice();
    mutate(b);
    return b;
  };
  // count over 1024, 2-byte varint 0x4401 = 1025
  assert.throws(() => xoq.decodeBatch(Uint8Array.of(0x44, 0x01)), xoq.CodecError);
  // count larger than the bytes present
  assert.throws(() => xoq.decodeBatch(bad((b) => (b[0] = 2))), xoq.CodecError);
  // reserved flag bit 6
  assert.throws(() => xoq.decodeBatch(bad((b) => (b[1] = 0x40))), xoq.CodecError);
  // BRS on a classic frame
  assert.throws(() => xoq.decodeBatch(bad((b) => (b[1] = 0x10))), xoq.CodecError);
  // standard id over 0x7FF
  assert.throws(() => xoq.decodeBatch(bad((b) => (b[4] = 0x08))), xoq.CodecError);
  // truncated data
  assert.throws(() => xoq.decodeBatch(good.subarray(0, good.length - 1)), xoq.CodecError);
  // empty input
  assert.throws(() => xoq.decodeBatch(new Uint8Array(0)), xoq.CodecError);
  // an RTR frame's length is requested, not carried
  const rtr = xoq.encodeBatch([xoq.canFrame(0x10, [], { rtr: true, rtrLen: 8, timestampUs: 1n })]);
  assert.equal(rtr.length, 1 + 14);
  assert.equal(xoq.decodeBatch(rtr)[0].rtrLen, 8);
  // decoded data does not alias the input
  const input = good.slice();
  const f = xoq.decodeBatch(input)[0];
  input[input.length - 1] = 0xee;
  assert.equal(f.data[2], 3);
});

test("encodeBatch refuses invalid frames and oversized batches", () => {
  const ok = xoq.canFrame(1, [1]);
  assert.throws(() => xoq.encodeBatch([{ ...ok, data: new Uint8Array(9) }]), xoq.CodecError);
  assert.throws(() => xoq.encodeBatch([{ ...ok, fd: true, data: new Uint8Array(9) }]), xoq.CodecError);
  assert.throws(() => xoq.encodeBatch([{ ...ok, id: 0x800 }]), xoq.CodecError);
  assert.throws(() => xoq.encodeBatch([{ ...ok, extended: true, id: 0x20000000 }]), xoq.CodecError);
  assert.throws(() => xoq.encodeBatch([{ ...ok, timestampUs: -1n }]), xoq.CodecError);
  assert.throws(() => xoq.encodeBatch(new Array(1025).fill(ok)), xoq.CodecError);
  assert.equal(xoq.decodeBatch(xoq.encodeBatch(new Array(1024).fill(ok))).length, 1024);
});

test("canFrame fills defaults and validates", () => {
  const before = xoq.unixMicros();
  const f = xoq.canFrame(0x123, [0xde, 0xad]);
  assert.equal(f.extended, false);
  assert.ok(f.timestampUs >= before && f.timestampUs - before < 10_000_000n);
  assert.equal(xoq.canFrame(0x800, []).extended, true);
  assert.equal(xoq.canFrame(0x1abcdef0, new Uint8Array(12), { fd: true, brs: true }).data.length, 12);
  assert.throws(() => xoq.canFrame(0x123, new Uint8Array(13), { fd: true }), xoq.CodecError);
  assert.throws(() => xoq.canFrame(0x123, [1], { rtr: true }), xoq.CodecError);
  assert.equal(xoq.fdLenRoundUp(9), 12);
  assert.equal(xoq.fdLenRoundUp(65), undefined);
});

test("withToken prefixes len u8 | token", () => {
  const out = xoq.withToken(Uint8Array.of(0, 1), "abc");
  assert.equal(hex(out), "03616263" + "0001");
  assert.throws(() => xoq.withToken(new Uint8Array(0), "x".repeat(256)), xoq.CodecError);
});

test("varint matches RFC 9000 examples and boundaries", () => {
  const cases = [
    ["25", 37n],
    ["7bbd", 15293n],
    ["9d7f3e7d", 494878333n],
    ["c2197c5eff14e88c", 151288809941952652n],
  ];
  for (const [h, v] of cases) {
    assert.deepEqual(xoq.readVarint(unhex(h)), { value: v, size: h.length / 2 });
  }
  for (const v of [0n, 63n, 64n, 16383n, 16384n, 1073741823n, 1073741824n, xoq.VARINT_MAX]) {
    const e = xoq.encodeVarint(v);
    assert.equal(e.length, xoq.varintSize(v));
    assert.deepEqual(xoq.readVarint(e), { value: v, size: e.length });
    assert.equal(xoq.readVarint(e.subarray(0, e.length - 1)), undefined);
  }
  assert.equal(hex(xoq.encodeVarint(37)), "25");
  assert.throws(() => xoq.encodeVarint(-1), RangeError);
  assert.throws(() => xoq.encodeVarint(xoq.VARINT_MAX + 1n), RangeError);
});

test("Damiao MIT commands match the Rust bytes exactly", () => {
  for (const m of V.damiao_mit) {
    assert.equal(hex(xoq.encodeMit(m.model, m.p, m.v, m.kp, m.kd, m.t)), m.hex, JSON.stringify(m));
  }
  // NaN maps to code 0, as in Rust
  assert.equal(xoq.floatToUint(Number.NaN, -1, 1, 12), 0);
});

test("Damiao feedback decodes like the Rust simulator", () => {
  const close = (a, b, what) => assert.ok(Math.abs(a - b) <= 1e-4, `${what}: ${a} vs ${b}`);
  for (const f of V.damiao_feedback) {
    const d = xoq.decodeFeedback(f.model, unhex(f.hex));
    assert.ok(d, f.hex);
    assert.equal(d.motorId, f.motor_id);
    assert.equal(d.state, f.state);
    close(d.position, f.position, "position");
    close(d.velocity, f.velocity, "velocity");
    close(d.torque, f.torque, "torque");
    assert.equal(d.tMos, f.t_mos);
    assert.equal(d.tRotor, f.t_rotor);
  }
  assert.equal(xoq.decodeFeedback("DM4310", new Uint8Array(7)), null);
});

test("Damiao special commands, limits and the OpenArm layout", () => {
  assert.equal(hex(xoq.ENABLE), V.damiao_special.enable);
  assert.equal(hex(xoq.DISABLE), V.damiao_special.disable);
  assert.equal(hex(xoq.SET_ZERO), V.damiao_special.set_zero);
  assert.deepEqual(
    Object.fromEntries(Object.entries(xoq.DAMIAO_LIMITS).map(([k, v]) => [k, [...v]])),
    V.damiao_limits,
  );
  assert.deepEqual(
    xoq.OPENARM_MOTORS.map((m) => [m.id, m.replyId, m.model]),
    [
      [1, 0x11, "DM8009"],
      [2, 0x12, "DM8009"],
      [3, 0x13, "DM4340"],
      [4, 0x14, "DM4340"],
      [5, 0x15, "DM4310"],
      [6, 0x16, "DM4310"],
      [7, 0x17, "DM4310"],
      [8, 0x18, "DM4310"],
    ],
  );
  assert.equal(hex(xoq.refreshRequest(0x105)), "0501cc0000000000");
});

test("Feetech instructions match the Rust bytes, and so do the helpers", () => {
  for (const v of V.feetech_instructions) {
    assert.equal(hex(xoq.instruction(v.id, v.instr, v.params)), v.hex, JSON.stringify(v));
  }
  const byHex = new Set(V.feetech_instructions.map((v) => v.hex));
  const helpers = {
    "readPosition(1)": xoq.readPosition(1),
    "writeGoalPosition(6, 2048)": xoq.writeGoalPosition(6, 2048),
    "syncReadPositions([1..6])": xoq.syncReadPositions([1, 2, 3, 4, 5, 6]),
    "syncWriteGoals({1:2500, 2:1500})": xoq.syncWriteGoals(new Map([[1, 2500], [2, 1500]])),
    "syncWriteGoals(record)": xoq.syncWriteGoals({ 1: 2500, 2: 1500 }),
  };
  for (const [name, bytes] of Object.entries(helpers)) {
    assert.ok(byHex.has(hex(bytes)), `${name} = ${hex(bytes)} is not a Rust vector`);
  }
  assert.equal(hex(xoq.torqueEnable(1, true)), hex(xoq.instruction(1, xoq.WRITE, [40, 1])));
  assert.equal(xoq.feetech.SYNC_WRITE, 0x83);
  assert.throws(() => xoq.instruction(1, 2, new Array(254).fill(0)), RangeError);
  assert.throws(() => xoq.writeGoalPosition(1, 70000), RangeError);
});

function expectedStatus(v) {
  return { id: v.id, error: v.error, params: Uint8Array.from(v.params) };
}

test("StatusParser parses each status whole, byte by byte, and behind garbage", () => {
  for (const v of V.feetech_status) {
    const bytes = unhex(v.hex);
    assert.deepEqual(new xoq.StatusParser().push(bytes), [expectedStatus(v)], "whole");

    const p = new xoq.StatusParser();
    const got = [];
    for (const b of bytes) got.push(...p.push(Uint8Array.of(b)));
    assert.deepEqual(got, [expectedStatus(v)], "byte by byte");
    assert.equal(p.pending, 0);

    // Garbage including a lone FF, an FF FF with an invalid length and a triple FF.
    const garbage = Uint8Array.of(0x00, 0x13, 0xff, 0x42, 0xff, 0xff, 0x01, 0x00, 0xff);
    const g = new xoq.StatusParser();
    assert.deepEqual(g.push(new Uint8Array([...garbage, ...bytes])), [expectedStatus(v)], "garbage in front");
    assert.equal(g.badChecksums, 0);
  }
});

test("StatusParser keeps order across packets, drops bad checksums, stays bounded", () => {
  const all = V.feetech_status.map((v) => unhex(v.hex));
  const corrupt = all[0].slice();
  corrupt[corrupt.length - 1] ^= 0xff;
  const stream = new Uint8Array([...corrupt, ...all.flatMap((b) => [...b])]);
  const p = new xoq.StatusParser();
  const got = [];
  // Odd chunk sizes split headers, lengths and checksums across pushes.
  for (let i = 0; i < stream.length; i += 3) got.push(...p.push(stream.subarray(i, i + 3)));
  assert.deepEqual(got, V.feetech_status.map(expectedStatus));
  assert.equal(p.badChecksums, 1);

  // Garbage without a header is never kept: at most a trailing FF.
  const q = new xoq.StatusParser();
  q.push(new Uint8Array(100_000).fill(0x55));
  assert.equal(q.pending, 0);
  // A header declaring the longest packet is held until it completes, never more.
  q.push(Uint8Array.of(0xff, 0xff, 0x01, 0xff));
  q.push(new Uint8Array(200));
  assert.ok(q.pending <= 259);
});

test("splitAddress uses the Rust rule: last segment is the broadcast", () => {
  assert.deepEqual(xoq.splitAddress("http://127.0.0.1:4443/anon/xoq-openarm"), {
    relay: "http://127.0.0.1:4443/anon",
    path: "xoq-openarm",
  });
  assert.deepEqual(xoq.splitAddress(" https://relay.example/a/b/c/ "), { relay: "https://relay.example/a/b", path: "c" });
  assert.deepEqual(xoq.splitAddress("https://relay.example:443/robot"), { relay: "https://relay.example/", path: "robot" });
  assert.deepEqual(xoq.splitAddress("http://h:1/anon/x?q=1#f"), { relay: "http://h:1/anon", path: "x" });
  for (const bad of ["", "abc", "http://127.0.0.1:4443", "http://127.0.0.1:4443/", "ftp://h/a/b"]) {
    assert.throws(() => xoq.splitAddress(bad), TypeError, bad);
  }
});

// --- relay session protocol ----------------------------------------------------------------

function writerFromVector(v) {
  switch (v.kind) {
    case "data":
      return { kind: "data", payload: unhex(v.payload) };
    case "sync":
      return { kind: "sync", nonce: BigInt(v.nonce) };
    case "ping":
      return { kind: "ping", id: v.id, clientUs: BigInt(v.client_us) };
    default:
      throw new Error(`unknown writer vector kind ${v.kind}`);
  }
}

function ctlFromVector(v) {
  switch (v.kind) {
    case "hello":
      return { kind: "hello", writer: v.writer, nonce: BigInt(v.nonce), writes: v.writes, serverUs: BigInt(v.server_us) };
    case "synced":
      return { kind: "synced", writer: v.writer, nonce: BigInt(v.nonce), dataGroup: BigInt(v.data_group) };
    case "pong":
      return { kind: "pong", writer: v.writer, id: v.id, clientUs: BigInt(v.client_us), serverUs: BigInt(v.server_us) };
    case "refused":
      return { kind: "refused", writer: v.writer, code: v.code, message: v.message };
    case "busState":
      return { kind: "busState", code: v.code };
    case "deviceLost":
      return { kind: "deviceLost", reason: v.reason };
    case "deviceRestored":
      return { kind: "deviceRestored" };
    case "bye":
      return { kind: "bye", reason: v.reason };
    default:
      throw new Error(`unknown ctl vector kind ${v.kind}`);
  }
}

test("relay vectors are present and cover every message kind", () => {
  for (const key of ["relay_writer", "relay_ctl", "relay_invalid"]) {
    assert.ok(Array.isArray(V[key]) && V[key].length > 0, `vectors lack ${key}`);
  }
  assert.deepEqual(new Set(V.relay_writer.map((v) => v.kind)), new Set(["data", "sync", "ping"]));
  assert.deepEqual(
    new Set(V.relay_ctl.map((v) => v.kind)),
    new Set(["hello", "synced", "pong", "refused", "busState", "deviceLost", "deviceRestored", "bye"]),
  );
});

test("relay writer frames decode to the Rust messages and encode to the Rust bytes", () => {
  for (const v of V.relay_writer) {
    const m = writerFromVector(v);
    assert.deepEqual(xoq.decodeWriterMsg(unhex(v.hex)), m, v.name);
    assert.equal(hex(xoq.encodeWriterMsg(m)), v.hex, v.name);
  }
  // The documented snapshot.
  assert.equal(hex(xoq.encodeWriterMsg({ kind: "sync", nonce: 0x0102n })), "010000000000000102");
  assert.equal(hex(xoq.dataFrame(Uint8Array.of(0xab))), "00ab");
});

test("relay ctl messages decode to the Rust messages and encode to the Rust bytes", () => {
  for (const v of V.relay_ctl) {
    const m = ctlFromVector(v);
    assert.deepEqual(xoq.decodeCtl(unhex(v.hex)), m, v.name);
    // A string over 1024 bytes is cut on a character boundary, as the Rust encoder does.
    const given = v.encoded_from === undefined ? m : { ...m, message: v.encoded_from };
    assert.equal(hex(xoq.encodeCtl(given)), v.hex, v.name);
    assert.equal(xoq.ctlWriter(m), "writer" in v ? v.writer : undefined, v.name);
  }
  assert.equal(
    hex(xoq.encodeCtl({ kind: "hello", writer: "ab", nonce: 1n, writes: false, serverUs: 2n })),
    "010261620000000000000001000000000000000002",
  );
});

test("invalid relay frames throw CodecError in both decoders", () => {
  for (const v of V.relay_invalid) {
    const decode = v.decoder === "writer" ? xoq.decodeWriterMsg : xoq.decodeCtl;
    assert.throws(() => decode(unhex(v.hex)), xoq.CodecError, v.name);
  }
});

test("relay encoders refuse numbers the wire cannot carry", () => {
  assert.throws(() => xoq.encodeWriterMsg({ kind: "sync", nonce: -1n }), xoq.CodecError);
  assert.throws(() => xoq.encodeWriterMsg({ kind: "sync", nonce: 1n << 64n }), xoq.CodecError);
  assert.throws(() => xoq.encodeWriterMsg({ kind: "ping", id: 2 ** 32, clientUs: 0n }), xoq.CodecError);
  assert.throws(() => xoq.encodeWriterMsg({ kind: "ping", id: 1.5, clientUs: 0n }), xoq.CodecError);
  assert.throws(() => xoq.encodeCtl({ kind: "refused", writer: "w", code: 65536, message: "" }), xoq.CodecError);
  assert.throws(() => xoq.encodeCtl({ kind: "busState", code: 256 }), xoq.CodecError);
  assert.throws(() => xoq.encodeCtl({ kind: "nope" }), xoq.CodecError);
  // Data copies: the decoded payload does not alias the input.
  const input = Uint8Array.of(0, 1, 2);
  const m = xoq.decodeWriterMsg(input);
  input[1] = 9;
  assert.deepEqual([...m.payload], [1, 2]);
});

test("relay URLs keep their token for dialling and never show it", () => {
  const a = xoq.splitAddress("http://127.0.0.1:4443/anon/xoq-openarm?jwt=SECRET&x=1#f");
  assert.deepEqual(a, { relay: "http://127.0.0.1:4443/anon?jwt=SECRET", path: "xoq-openarm" });
  assert.equal(xoq.jwtOf(a.relay), "SECRET");
  assert.equal(xoq.redactUrl(a.relay), "http://127.0.0.1:4443/anon");
  assert.equal(xoq.redactUrl("http://h:1/"), "http://h:1");
  assert.equal(xoq.redactUrl("not a url?jwt=SECRET"), "not a url");
  assert.equal(xoq.withJwt("http://h:1/anon?jwt=OLD", "NEW"), "http://h:1/anon?jwt=NEW");
  assert.equal(xoq.withJwt("http://h:1/anon?jwt=OLD", ""), "http://h:1/anon");
  assert.equal(xoq.scrubToken("failed: ws://h:1/anon?jwt=a%2Bb and a+b", "http://h:1/anon?jwt=a%2Bb"), "failed: ws://h:1/anon?jwt=<redacted> and <redacted>");
  assert.throws(() => xoq.splitAddress("ftp://h/a?jwt=SECRET"), (e) => e instanceof TypeError && !e.message.includes("SECRET"));
});
