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
      timeout: 400_000,
    });
    const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
    for (const line of out.split("\n")) if (/^(not )?ok |^# (tests|pass|fail) /.test(line)) console.log(line);
    assert.equal(r.error, undefined, `child node failed to run: ${r.error}`);
    assert.equal(r.status, 0, `MoQ tests failed in the child node:\n${out}`);
    const pass = Number(/^# pass (\d+)/m.exec(out)?.[1] ?? 0);
    assert.ok(pass >= 10, `expected at least 10 MoQ tests to pass, got ${pass}:\n${out}`);
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
  // ...and on Set.prototype.difference (Node 22+) to announce a broadcast published after
  // the session started: without it the announce stream fails and the relay drops the session.
  if (!Set.prototype.difference) {
    Set.prototype.difference = function (other) {
      const out = new Set();
      for (const x of this) if (!other.has(x)) out.add(x);
      return out;
    };
  }
  // The library traces every subscribe at debug level; keep the test output readable.
  console.debug = () => {};

  const children = [];
  const home = mkdtempSync(join(tmpdir(), "xoq-js-test-"));
  const env = { ...process.env, XOQ_OFFLINE: "1", XOQ_HOME: home, NO_COLOR: "1" };
  let xoq;
  let relay; // e.g. http://127.0.0.1:PORT/anon
  let relayRoot; // e.g. http://127.0.0.1:PORT/
  let canAddress; // printed by the CAN server
  let authRoot; // a relay that checks tokens
  let tokens; // { server, full, viewer } for anon/js-tok on it

  // Start an xoq subcommand and resolve with its stdout lines once it prints `ready`.
  function start(args, what) {
    return new Promise((resolveStart, rejectStart) => {
      const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      let out = "";
      let err = "";
      let ready = false;
      const timer = setTimeout(() => rejectStart(new Error(`${what} did not print "ready" in 15 s:\n${out}${err}`)), 15_000);
      child.on("error", (e) => {
        clearTimeout(timer);
        rejectStart(new Error(`cannot start ${bin} (${what}): ${e.message}; build it with cargo build -p xoq or set XOQ_BIN`));
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        if (!ready) rejectStart(new Error(`${what} exited with ${code}:\n${out}${err}`));
      });
      child.stderr.on("data", (d) => {
        err += d;
      });
      child.stdout.on("data", (d) => {
        out += d;
        if (!ready && /^ready$/m.test(out)) {
          ready = true;
          clearTimeout(timer);
          resolveStart({ child, lines: out.split("\n") });
        }
      });
    });
  }

  function stop(child, signal = "SIGTERM") {
    return new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done();
      const t = setTimeout(() => {
        child.kill("SIGKILL");
      }, 3000);
      child.on("exit", () => {
        clearTimeout(t);
        done();
      });
      child.kill(signal);
    });
  }

  function run(args) {
    const r = spawnSync(bin, args, { env, encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, `xoq ${args.join(" ")} failed: ${r.stderr}`);
    return r.stdout.trim();
  }

  const urlOf = (lines) => lines.map((l) => /^url: (http:\/\/127\.0\.0\.1:\d+\/)$/.exec(l)?.[1]).find(Boolean);

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

  // Send `frame` until a frame matching `match` comes back: the link may still be resyncing
  // (sends then fail fast with LinkDownError, which is the point).
  async function commandUntil(bus, frame, match, ms) {
    const end = performance.now() + ms;
    let last;
    for (;;) {
      if (performance.now() > end) throw new Error(`no reply within ${ms} ms (last send error: ${last?.message}; link ${bus.link.state}: ${bus.link.reason})`);
      try {
        bus.send(frame);
      } catch (e) {
        if (!(e instanceof xoq.LinkDownError)) throw e;
        last = e;
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const f = await bus.recv(300);
      if (f && match(f)) return f;
      while (true) {
        const g = await bus.recv(0);
        if (!g) break;
        if (match(g)) return g;
      }
    }
  }

  before(async () => {
    xoq = await import("../dist/index.js");
    const r = await start(["relay", "--listen", "127.0.0.1:0"], "xoq relay");
    relayRoot = urlOf(r.lines);
    assert.ok(relayRoot, `no url in the relay's output:\n${r.lines.join("\n")}`);
    relay = `${relayRoot}anon`;
    const serverArgs = ["--bind", "127.0.0.1:0", "--relay", relayRoot, "--no-p2p"];
    const keyPath = join(home, "relay.jwk");
    const [can, , , , auth] = await Promise.all([
      start(["can-server", "sim:openarm", ...serverArgs, "--moq", "anon/js-can", "--moq-writes", "on"], "can-server"),
      start(["can-server", "sim:openarm", ...serverArgs, "--moq", "anon/js-can-ro"], "can-server, writes off"),
      start(["serial-server", "sim:so101", ...serverArgs, "--moq", "anon/js-serial", "--moq-writes", "on"], "serial-server"),
      start(["can-server", "sim:openarm", ...serverArgs, "--moq", "anon/js-blip", "--moq-writes", "on"], "can-server for blips"),
      start(["relay", "--listen", "127.0.0.1:0", "--auth-key", keyPath], "xoq relay --auth-key"),
    ]);
    canAddress = can.lines.map((l) => /^address: (http:\S+)$/.exec(l)?.[1]).find(Boolean);
    assert.ok(canAddress, `no MoQ address in the CAN server's output:\n${can.lines.join("\n")}`);
    const authUrl = urlOf(auth.lines);
    authRoot = `${authUrl}anon`;
    tokens = {
      server: run(["token", "--key", keyPath, "--publish", "anon/js-tok", "--subscribe", "anon/js-tok"]),
      full: run(["token", "--key", keyPath, "--publish", "anon/js-tok", "--subscribe", "anon/js-tok"]),
      viewer: run(["token", "--key", keyPath, "--subscribe", "anon/js-tok"]),
    };
    await start(
      ["can-server", "sim:openarm", "--bind", "127.0.0.1:0", "--relay", `${authUrl}?jwt=${tokens.server}`, "--no-p2p", "--moq", "anon/js-tok", "--moq-writes", "on"],
      "can-server behind tokens",
    );
  });

  after(async () => {
    await Promise.all(children.map((c) => stop(c)));
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
      assert.equal(bus.link.state, "connected");
      assert.equal(bus.link.readOnly, false);
      assert.match(bus.link.writer, /^[0-9a-f]{16}$/);
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
      // Clock probes go out once a second: an estimate of the server's clock appears.
      await new Promise((res) => setTimeout(res, 1200));
      const est = bus.link.clock.estimate();
      assert.ok(est && est.samples >= 1 && est.rttUs >= 0, `clock estimate ${JSON.stringify(est)}`);
      // Same machine, same clock: the offset is within the round trip.
      assert.ok(Math.abs(est.offsetUs) <= est.rttUs + 5000, `offset ${est.offsetUs} µs with rtt ${est.rttUs} µs`);
    } finally {
      bus.send(xoq.canFrame(0x01, xoq.DISABLE));
      bus.close();
    }
    assert.equal(bus.link.state, "closed");
    assert.throws(() => bus.send(xoq.canFrame(0x01, xoq.ENABLE)), xoq.LinkClosedError);
  });

  test("openCan: a client opened later does not see earlier traffic", { timeout: 30_000 }, async () => {
    const first = await xoq.openCan(relay, "js-can");
    try {
      first.send(xoq.canFrame(0x02, xoq.ENABLE));
      await waitFrame(first, 5000, (f) => f.id === 0x12);
    } finally {
      first.close();
    }
    // The relay still holds the group with 0x02/0x12; the server's Synced marker cuts it.
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
    const shared = await xoq.Relay.connect(relay);
    const a = await xoq.openCan(relay, "js-can", { relay: shared });
    const b = await xoq.openCan(relay, "js-can", { relay: shared });
    try {
      assert.notEqual(a.link.writer, b.link.writer);
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
      assert.equal(shared.state, "connected", "a shared relay stays open");
      shared.close();
    }
  });

  test("openCan on a server with relay writes off: reads work, sends are refused clearly", { timeout: 30_000 }, async () => {
    const bus = await xoq.openCan(relay, "js-can-ro");
    try {
      assert.equal(bus.link.state, "connected");
      assert.equal(bus.link.writes, false);
      assert.throws(
        () => bus.send(xoq.canFrame(0x04, xoq.ENABLE)),
        (e) => e instanceof xoq.RefusedError && e.code === 6 && /--moq-writes/.test(e.message),
      );
      await assert.rejects(xoq.openCan(relay, "js-can-ro", { token: "x" }), /relay token/);
    } finally {
      bus.close();
    }
  });

  test("openSerial: SYNC_READ of the simulated SO-101 returns six positions", { timeout: 30_000 }, async () => {
    const port = await xoq.openSerial(relay, "js-serial");
    try {
      const parser = new xoq.StatusParser();
      const ids = [1, 2, 3, 4, 5, 6];
      await port.write(xoq.syncReadPositions(ids));
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
      await port.write(xoq.readPosition(3));
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
    await assert.rejects(port.write(Uint8Array.of(1)), xoq.LinkClosedError);
  });

  test("openCan fails clearly when nothing publishes the path", { timeout: 30_000 }, async () => {
    await assert.rejects(xoq.openCan(relay, "nobody-here", { timeoutMs: 500 }), /no CAN server publishes nobody-here/);
  });

  test("a link blip: the client reconnects with the same writer, resyncs, and commands again", { timeout: 40_000 }, async () => {
    const bus = await xoq.openCan(relay, "js-blip");
    const port = await xoq.openSerial(relay, "js-serial");
    try {
      const states = [];
      let whileDown;
      bus.link.addEventListener("state", (e) => {
        states.push(e.state);
        if (e.state === "reconnecting" && whileDown === undefined) {
          try {
            bus.send(xoq.canFrame(0x07, xoq.ENABLE));
            whileDown = "sent";
          } catch (err) {
            whileDown = err;
          }
        }
      });
      const writer = bus.link.writer;
      await commandUntil(bus, xoq.canFrame(0x07, xoq.ENABLE), (f) => f.id === 0x17, 5000);
      // Drop the relay session under the client, as a network blip does.
      bus.relay.connection.close();
      await withDeadline(5000, "link down after the blip", async () => {
        while (bus.link.state === "connected") await new Promise((r) => setTimeout(r, 5));
      });
      assert.ok(whileDown instanceof xoq.LinkDownError, `CAN sends fail fast while down (${whileDown})`);
      assert.ok(await bus.link.waitConnected(15_000), `link back (${bus.link.state}: ${bus.link.reason})`);
      assert.equal(bus.link.writer, writer, "same writer id");
      assert.deepEqual(states.slice(0, 1), ["reconnecting"]);
      assert.equal(states.at(-1), "connected");
      assert.ok(bus.relay.counters.drops >= 1 && bus.relay.counters.reconnects >= 1, JSON.stringify(bus.relay.counters));
      assert.ok(bus.link.counters.drops >= 1 && bus.link.counters.reconnects >= 1, JSON.stringify(bus.link.counters));
      assert.ok(bus.link.counters.syncs >= 2);
      await commandUntil(bus, xoq.canFrame(0x07, xoq.DISABLE), (f) => f.id === 0x17 && xoq.decodeFeedback("DM4310", f.data).state === 0, 5000);

      // A serial write issued while the link is down waits for it (bounded) and goes through.
      const down = async (p) => {
        p.relay.connection.close();
        await withDeadline(5000, "serial link down after the blip", async () => {
          while (p.link.state === "connected") await new Promise((r) => setTimeout(r, 5));
        });
      };
      await down(port);
      const parser = new xoq.StatusParser();
      await port.write(xoq.readPosition(2), 15_000);
      assert.equal(port.link.state, "connected");
      const got = await withDeadline(5000, "READ after the blip", async () => {
        for (;;) {
          const chunk = await port.recv(5000);
          assert.ok(chunk, "no reply to a write made while the link was down");
          const p = parser.push(chunk);
          if (p.length) return p[0];
        }
      });
      assert.equal(got.id, 2);
      // A write that cannot wait long enough fails with the reason.
      await down(port);
      await assert.rejects(port.write(xoq.readPosition(2), 0), xoq.LinkDownError);
      assert.ok(await port.link.waitConnected(15_000));
    } finally {
      bus.close();
      port.close();
    }
  });

  test("a server restart: the new server's Hello resyncs the link", { timeout: 90_000 }, async () => {
    const args = ["can-server", "sim:openarm", "--bind", "127.0.0.1:0", "--relay", relayRoot, "--no-p2p", "--moq", "anon/js-restart", "--moq-writes", "on"];
    let server = (await start(args, "can-server to restart")).child;
    const bus = await xoq.openCan(relay, "js-restart");
    try {
      const states = [];
      let whileDown;
      bus.link.addEventListener("state", (e) => {
        states.push(e.state);
        if (e.state === "reconnecting" && whileDown === undefined) {
          try {
            bus.send(xoq.canFrame(0x01, xoq.ENABLE));
            whileDown = "sent";
          } catch (err) {
            whileDown = err;
          }
        }
      });
      await commandUntil(bus, xoq.canFrame(0x01, xoq.ENABLE), (f) => f.id === 0x11, 5000);
      // The old server stops (it does not say Bye, so the relay notices in its own time) and
      // a new one publishes the same path: its Hello carries a new nonce.
      await stop(server);
      server = (await start(args, "can-server, restarted")).child;
      await withDeadline(60_000, "a resync with the new server", async () => {
        while (bus.link.counters.syncs < 2 || bus.link.state !== "connected") await new Promise((r) => setTimeout(r, 50));
      });
      assert.ok(states.includes("reconnecting"), `states ${states}`);
      assert.ok(whileDown instanceof xoq.LinkDownError, `CAN sends fail fast while resyncing (${whileDown})`);
      // A fresh sim, whose motor 1 starts disabled: commands reach it.
      const f = await commandUntil(bus, xoq.canFrame(0x01, xoq.ENABLE), (x) => x.id === 0x11, 5000);
      assert.equal(xoq.decodeFeedback("DM8009", f.data).state, 1);
    } finally {
      bus.close();
      await stop(server);
    }
  });

  test("a relay restart: the client redials with back-off and resyncs", { timeout: 120_000 }, async () => {
    // A relay of its own on a fixed port, so it can come back at the same address.
    let r = await start(["relay", "--listen", "127.0.0.1:0"], "relay to restart");
    const root = urlOf(r.lines);
    const listen = new URL(root).host;
    const server = (
      await start(["can-server", "sim:openarm", "--bind", "127.0.0.1:0", "--relay", root, "--no-p2p", "--moq", "anon/js-rr", "--moq-writes", "on"], "can-server on the relay to restart")
    ).child;
    const bus = await xoq.openCan(`${root}anon`, "js-rr");
    try {
      const relayStates = [];
      bus.relay.addEventListener("state", (e) => relayStates.push(e.state));
      await commandUntil(bus, xoq.canFrame(0x01, xoq.ENABLE), (f) => f.id === 0x11, 5000);
      await stop(r.child);
      await withDeadline(10_000, "link down after the relay stopped", async () => {
        while (bus.link.state === "connected") await new Promise((res) => setTimeout(res, 50));
      });
      await new Promise((res) => setTimeout(res, 1000));
      assert.equal(bus.relay.state, "reconnecting");
      assert.match(bus.relay.reason, /cannot reach the relay at http:\/\/127\.0\.0\.1:\d+\/anon/);
      const attempts = bus.relay.counters.attempts;
      assert.ok(attempts >= 3, `back-off retries at once, then quickly (${attempts} attempts in ~1 s)`);
      r = await start(["relay", "--listen", listen], "relay, restarted");
      assert.ok(await bus.relay.waitConnected(10_000), "the relay session is back");
      // The server notices its relay went away in its own time, then sees this writer again.
      assert.ok(await bus.link.waitConnected(60_000), `link back (${bus.link.state}: ${bus.link.reason})`);
      await commandUntil(bus, xoq.canFrame(0x01, xoq.DISABLE), (f) => f.id === 0x11 && xoq.decodeFeedback("DM8009", f.data).state === 0, 10_000);
      assert.deepEqual(relayStates.slice(0, 1), ["reconnecting"]);
      assert.equal(bus.relay.counters.reconnects, 1);
    } finally {
      bus.close();
      await stop(server);
      await stop(r.child);
    }
  });

  test("tokens: a full token writes, a subscribe-only token reads, none or a bad one is refused", { timeout: 60_000 }, async () => {
    const writer = await xoq.openCan(`${authRoot}?jwt=${tokens.full}`, "js-tok");
    const viewer = await xoq.openCan(xoq.withJwt(authRoot, tokens.viewer), "js-tok", { syncWaitMs: 1500 });
    try {
      assert.equal(writer.link.readOnly, false);
      assert.equal(writer.relay.hasToken, true);
      assert.ok(!writer.relay.url.includes(tokens.full), "the relay URL shown has no token");
      assert.equal(viewer.link.state, "connected");
      assert.equal(viewer.link.readOnly, true, "nobody acknowledged the viewer's writer");
      assert.throws(
        () => viewer.send(xoq.canFrame(0x02, xoq.ENABLE)),
        (e) => e instanceof xoq.ReadOnlyError && /token/.test(e.message) && !e.message.includes(tokens.viewer),
      );
      // The viewer reads what the writer causes.
      await commandUntil(writer, xoq.canFrame(0x02, xoq.ENABLE), (f) => f.id === 0x12, 5000);
      await waitFrame(viewer, 5000, (f) => f.id === 0x12);
    } finally {
      writer.close();
      viewer.close();
    }
    for (const url of [authRoot, `${authRoot}?jwt=not-a-token-SECRET`]) {
      await assert.rejects(xoq.openCan(url, "js-tok", { timeoutMs: 1500 }), (e) => {
        assert.match(e.message, /cannot reach the relay at http:\/\/127\.0\.0\.1:\d+\/anon/);
        assert.ok(!e.message.includes("SECRET"), e.message);
        return true;
      });
    }
  });
}
