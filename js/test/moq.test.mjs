// The MoQ clients end to end against the real Rust binaries on loopback: `xoq relay`, a
// simulated OpenArm CAN bus and a simulated SO-101 servo bus. Node has no WebTransport, so
// @moq/net falls back to WebSocket on the relay's port; browsers take the WebTransport path.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import test, { after, before } from "node:test";
import { fileURLToPath } from "node:url";

const self = fileURLToPath(import.meta.url);
const pkgDir = resolve(dirname(self), "..");
const bin = process.env.XOQ_BIN ? resolve(process.env.XOQ_BIN) : resolve(pkgDir, "../target/debug/xoq");

if (typeof WebSocket === "undefined") {
  // Node 20 only exposes WebSocket behind a flag, which a test file cannot set for itself:
  // run this same file in a child node that has it, and fail if the child fails.
  test("MoQ clients (child node with --experimental-websocket)", () => {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT; // else the child reports in the runner's internal format
    const r = spawnSync(process.execPath, ["--experimental-websocket", "--test", "--test-reporter=tap", self], {
      env,
      encoding: "utf8",
      timeout: 180_000,
    });
    const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
    for (const line of out.split("\n")) if (/^(not )?ok |^# (tests|pass|fail) /.test(line)) console.log(line);
    assert.equal(r.error, undefined, `child node failed to run: ${r.error}`);
    assert.equal(r.status, 0, `MoQ tests failed in the child node:\n${out}`);
    const pass = Number(/^# pass (\d+)/m.exec(out)?.[1] ?? 0);
    assert.ok(pass >= 6, `expected at least 6 MoQ tests to pass, got ${pass}:\n${out}`);
  });
} else {
  moqTests();
}

function moqTests() {
  globalThis.XOQ_DEBUG = 1;
  // @moq/net relies on Promise.withResolvers (Node 22+, every current browser).
  if (!Promise.withResolvers) {
    Promise.withResolvers = function () {
      let resolve;
      let reject;
      const promise = new this((a, b) => {
        resolve = a;
        reject = b;
      });
      return { promise, resolve, reject };
    };
  }
  // The library traces every subscribe at debug level; keep the test output readable.
  console.debug = () => {};

  const children = [];
  const home = mkdtempSync(join(tmpdir(), "xoq-js-test-"));
  const env = { ...process.env, XOQ_OFFLINE: "1", XOQ_HOME: home, NO_COLOR: "1" };
  let xoq;
  let relay; // e.g. http://127.0.0.1:PORT/anon
  let canAddress; // printed by the CAN server
  const tokenPath = "js-can-token";
  const token = "s3cret";

  // Start an xoq subcommand and resolve with its stdout lines once it prints `ready`.
  function start(args, what) {
    return new Promise((resolveStart, rejectStart) => {
      const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      let out = "";
      let err = "";
      const timer = setTimeout(() => rejectStart(new Error(`${what} did not print "ready" in 15 s:\n${out}${err}`)), 15_000);
      child.on("error", (e) => {
        clearTimeout(timer);
        rejectStart(new Error(`cannot start ${bin} (${what}): ${e.message}; build it with cargo build -p xoq or set XOQ_BIN`));
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        rejectStart(new Error(`${what} exited with ${code}:\n${out}${err}`));
      });
      child.stderr.on("data", (d) => {
        err += d;
      });
      child.stdout.on("data", (d) => {
        out += d;
        if (/^ready$/m.test(out)) {
          clearTimeout(timer);
          resolveStart(out.split("\n"));
        }
      });
    });
  }

  async function withDeadline(ms, what, fn) {
    let timer;
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    });
    try {
      return await Promise.race([fn(), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  // Read frames until one matches, or fail after `ms`. recv's own timeout loses no frame.
  async function waitFrame(bus, ms, match) {
    const end = performance.now() + ms;
    for (;;) {
      const left = end - performance.now();
      const f = left > 0 ? await bus.recv(left) : undefined;
      if (f === undefined) throw new Error(`waiting for a CAN frame: no answer within ${ms} ms`);
      if (match(f)) return f;
    }
  }

  before(async () => {
    xoq = await import("../dist/index.js");
    const lines = await start(["relay", "--listen", "127.0.0.1:0"], "xoq relay");
    const url = lines.map((l) => /^url: (http:\/\/127\.0\.0\.1:\d+\/)$/.exec(l)?.[1]).find(Boolean);
    assert.ok(url, `no url in the relay's output:\n${lines.join("\n")}`);
    relay = `${url}anon`;
    const serverArgs = ["--bind", "127.0.0.1:0", "--relay", url, "--no-p2p"];
    const [can] = await Promise.all([
      start(["can-server", "sim:openarm", ...serverArgs, "--moq", "anon/js-can"], "can-server"),
      start(["can-server", "sim:openarm", ...serverArgs, "--moq", `anon/${tokenPath}`, "--moq-cmd-token", token], "can-server with token"),
      start(["serial-server", "sim:so101", ...serverArgs, "--moq", "anon/js-serial"], "serial-server"),
    ]);
    canAddress = can.map((l) => /^address: (http:\S+)$/.exec(l)?.[1]).find(Boolean);
    assert.ok(canAddress, `no MoQ address in the CAN server's output:\n${can.join("\n")}`);
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    await Promise.all(
      children.map(
        (c) =>
          new Promise((done) => {
            if (c.exitCode !== null || c.signalCode !== null) return done();
            const t = setTimeout(() => {
              c.kill("SIGKILL");
              done();
            }, 3000);
            c.on("exit", () => {
              clearTimeout(t);
              done();
            });
          }),
      ),
    );
    rmSync(home, { recursive: true, force: true });
    // A leaked socket must fail the run, not hang it.
    setTimeout(() => {
      console.error("moq.test.mjs: handles still open 10 s after the tests; exiting");
      process.exit(1);
    }, 10_000).unref();
  });

  test("openCan: enable motor 1 of the simulated OpenArm, feedback arrives on 0x11", { timeout: 30_000 }, async () => {
    const { relay: r, path } = xoq.splitAddress(canAddress);
    assert.equal(r, relay);
    assert.equal(path, "js-can");
    const bus = await xoq.openCan(r, path);
    try {
      bus.send(xoq.canFrame(0x01, xoq.ENABLE));
      const reply = await waitFrame(bus, 5000, (f) => f.id === 0x11);
      const fb = xoq.decodeFeedback("DM8009", reply.data);
      assert.equal(fb.motorId, 1);
      assert.equal(fb.state, 1, "enabled");
      // An MIT command is answered with feedback too, and then the motor moves toward it.
      bus.send([xoq.canFrame(0x01, xoq.encodeMit("DM8009", 0.5, 0, 30, 1, 0))]);
      const moved = await waitFrame(bus, 5000, (f) => f.id === 0x11);
      assert.equal(xoq.decodeFeedback("DM8009", moved.data).state, 1);
      assert.equal(bus.badBatches, 0);
    } finally {
      bus.send(xoq.canFrame(0x01, xoq.DISABLE));
      bus.close();
    }
  });

  test("openCan: a client opened later does not see earlier traffic", { timeout: 30_000 }, async () => {
    const first = await xoq.openCan(relay, "js-can");
    try {
      first.send(xoq.canFrame(0x02, xoq.ENABLE));
      await waitFrame(first, 5000, (f) => f.id === 0x12);
    } finally {
      first.close();
    }
    // The relay still holds the group with 0x02/0x12; a new client must skip it as backlog.
    const late = await xoq.openCan(relay, "js-can");
    try {
      late.send(xoq.canFrame(0x03, xoq.ENABLE));
      const f = await waitFrame(late, 5000, (x) => [0x02, 0x12, 0x03, 0x13].includes(x.id));
      assert.equal(f.id, 0x03, `the first frame seen is 0x${f.id.toString(16)}, not the echo of 0x03`);
      await waitFrame(late, 5000, (x) => x.id === 0x13);
    } finally {
      late.close();
    }
  });

  test("openCan: two clients command the same bus at the same time", { timeout: 30_000 }, async () => {
    const a = await xoq.openCan(relay, "js-can");
    const b = await xoq.openCan(relay, "js-can");
    try {
      a.send(xoq.canFrame(0x05, xoq.ENABLE));
      b.send(xoq.canFrame(0x06, xoq.ENABLE));
      // Each writer has its own broadcast, and the server reads both.
      const seen = new Set();
      while (!(seen.has(0x15) && seen.has(0x16))) {
        seen.add((await waitFrame(a, 5000, (f) => f.id === 0x15 || f.id === 0x16)).id);
      }
    } finally {
      a.send(xoq.canFrame(0x05, xoq.DISABLE));
      b.send(xoq.canFrame(0x06, xoq.DISABLE));
      a.close();
      b.close();
    }
  });

  test("openCan with --moq-cmd-token: only batches with the token reach the bus", { timeout: 30_000 }, async () => {
    // One writer at a time: every client of a path publishes the same {path}/cmd broadcast.
    const wrong = await xoq.openCan(relay, tokenPath, { token: "wrong" });
    try {
      wrong.send(xoq.canFrame(0x04, xoq.ENABLE));
      // Nothing may come back for the refused command (not even its echo).
      await assert.rejects(
        waitFrame(wrong, 1000, (f) => f.id === 0x04 || f.id === 0x14),
        /no answer within/,
      );
    } finally {
      wrong.close();
    }
    const right = await xoq.openCan(relay, tokenPath, { token });
    try {
      right.send(xoq.canFrame(0x04, xoq.ENABLE));
      const f = await waitFrame(right, 5000, (x) => x.id === 0x14);
      assert.equal(xoq.decodeFeedback("DM4340", f.data).state, 1);
    } finally {
      right.close();
    }
  });

  test("openSerial: SYNC_READ of the simulated SO-101 returns six positions", { timeout: 30_000 }, async () => {
    const port = await xoq.openSerial(relay, "js-serial");
    try {
      const parser = new xoq.StatusParser();
      const ids = [1, 2, 3, 4, 5, 6];
      port.write(xoq.syncReadPositions(ids));
      // The iterator, bounded by a deadline (a read lost to the timeout would not matter).
      const got = await withDeadline(5000, "SO-101 status packets", async () => {
        const packets = [];
        for await (const chunk of port) {
          packets.push(...parser.push(chunk));
          if (packets.length >= ids.length) return packets;
        }
        throw new Error("serial stream ended");
      });
      // recv after the loop: breaking out did not close the stream.
      port.write(xoq.readPosition(3));
      const more = [];
      while (more.length === 0) {
        const chunk = await port.recv(5000);
        assert.ok(chunk, "no answer to READ after leaving the for-await loop");
        more.push(...parser.push(chunk));
      }
      assert.equal(more[0].id, 3);
      assert.deepEqual(
        got.map((s) => s.id),
        ids,
      );
      for (const s of got) {
        assert.equal(s.error, 0);
        assert.equal(s.params.length, 2);
      }
      assert.equal(parser.badChecksums, 0);
    } finally {
      port.close();
    }
  });

  test("openCan fails clearly when nothing publishes the path", { timeout: 30_000 }, async () => {
    await assert.rejects(xoq.openCan(relay, "nobody-here", { timeoutMs: 500 }), /no CAN server publishes nobody-here/);
  });
}
