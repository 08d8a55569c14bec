// The client side of the relay session protocol (RelaySession) against an in-memory fake of
// the server's tracks: control messages go in through the codec, the frames the client writes
// on its writer track come out through it, so the state machine is checked without a relay.

import assert from "node:assert/strict";
import test from "node:test";

import * as xoq from "../dist/index.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function harness(opts = {}) {
  const writes = [];
  const delivered = [];
  const events = [];
  const notices = [];
  const s = new xoq.RelaySession({
    writer: "w1",
    write: (frame, newGroup) => writes.push({ msg: xoq.decodeWriterMsg(frame), newGroup }),
    deliver: (p) => delivered.push(p[0]),
    peer: "http://relay:4443/anon/dev",
    writesOffCode: 6,
    writerPath: "dev/cmd",
    syncWaitMs: 40,
    pingEveryMs: 0,
    ...opts,
  });
  s.addEventListener("state", (e) => events.push(e.state));
  s.addEventListener("notice", (e) => notices.push(e.notice));
  // Everything the server says goes through the codec, as on the wire.
  const ctl = (m) => s.onCtlFrame(xoq.encodeCtl(m));
  const hello = (nonce, writes = true, writer = "w1") => ctl({ kind: "hello", writer, nonce, writes, serverUs: 1n });
  const synced = (nonce, dataGroup, writer = "w1") => ctl({ kind: "synced", writer, nonce, dataGroup });
  const data = (group, byte) => s.onData(group, Uint8Array.of(byte));
  const syncs = () => writes.filter((w) => w.msg.kind === "sync");
  const sent = () => writes.filter((w) => w.msg.kind === "data").map((w) => [...w.msg.payload]);
  return { s, writes, delivered, events, notices, hello, synced, data, syncs, sent, ctl };
}

test("Hello → Sync in a new group → Synced: connected, backlog cut at data_group, early data kept", () => {
  const h = harness();
  h.s.onServerPresent();
  assert.equal(h.s.state, "connecting");
  assert.throws(() => h.s.writeData(Uint8Array.of(1)), xoq.LinkDownError, "not synced: fail fast");
  // The relay replays the server's latest group (history), then new data arrives, all before Synced.
  h.data(3, 30);
  h.data(4, 40);
  h.hello(7n);
  assert.deepEqual(h.syncs(), [{ msg: { kind: "sync", nonce: 7n }, newGroup: true }], "Sync(nonce) starts a new group");
  h.data(5, 50);
  h.hello(7n); // repeated until answered: no second Sync
  assert.equal(h.syncs().length, 1);
  assert.deepEqual(h.delivered, [], "nothing before Synced");
  h.hello(9n, true, "someone-else");
  h.synced(9n, 4n, "someone-else");
  assert.equal(h.s.state, "connecting", "messages for other writers are ignored");
  h.synced(6n, 4n); // a Synced for a nonce we never answered
  assert.equal(h.s.state, "connecting");
  h.synced(7n, 4n);
  assert.equal(h.s.state, "connected");
  assert.deepEqual(h.delivered, [40, 50], "group 3 is backlog; 4 and 5 are this client's view");
  assert.equal(h.s.dataGroup, 4);
  h.data(3, 31);
  h.data(6, 60);
  assert.deepEqual(h.delivered, [40, 50, 60]);
  assert.equal(h.s.counters.backlogDropped, 2);
  h.s.writeData(Uint8Array.of(0xaa));
  assert.deepEqual(h.sent(), [[0xaa]]);
  assert.equal(h.writes.at(-1).newGroup, false, "data continues the writer's group");
  assert.deepEqual(h.events, ["connected"]);
  assert.equal(h.s.counters.syncs, 1);
  h.s.close("done");
});

test("a new nonce while connected is a resync: link down until the new Synced", () => {
  const h = harness();
  h.s.onServerPresent();
  h.hello(1n);
  h.synced(1n, 0n);
  h.data(0, 1);
  h.hello(2n); // the server subscribed again (it restarted, or the relay did)
  assert.equal(h.s.state, "reconnecting");
  assert.match(h.s.reason, /resyncing/);
  assert.throws(() => h.s.writeData(Uint8Array.of(1)), xoq.LinkDownError);
  assert.deepEqual(
    h.syncs().map((w) => [w.msg.nonce, w.newGroup]),
    [
      [1n, true],
      [2n, true],
    ],
  );
  h.data(0, 2); // new server numbering restarts: held until Synced names the start
  h.data(1, 3);
  h.synced(1n, 0n); // stale: the old nonce
  assert.equal(h.s.state, "reconnecting");
  h.synced(2n, 1n);
  assert.equal(h.s.state, "connected");
  assert.deepEqual(h.delivered, [1, 3]);
  assert.deepEqual(h.s.counters, { ...h.s.counters, drops: 1, reconnects: 1, syncs: 2 });
  assert.deepEqual(h.events, ["connected", "reconnecting", "connected"]);
  h.s.close("done");
});

test("server gone: link down; the relay's replay of the old Hello/Synced does not count", () => {
  const h = harness();
  h.s.onServerPresent();
  h.hello(5n);
  h.synced(5n, 2n);
  h.s.onServerGone();
  assert.equal(h.s.state, "reconnecting");
  assert.throws(() => h.s.writeData(Uint8Array.of(1)), (e) => e instanceof xoq.LinkDownError && /link down for \d+\.\d s/.test(e.message));
  h.s.onServerPresent();
  // Subscribing again replays the latest ctl group: the Hello and Synced from before.
  h.hello(5n);
  h.synced(5n, 2n);
  assert.equal(h.s.state, "reconnecting", "old nonce: not a sync");
  assert.equal(h.syncs().length, 1, "no Sync for a stale nonce");
  h.hello(6n);
  h.synced(6n, 9n);
  assert.equal(h.s.state, "connected");
  h.s.onRelayDown("the session to the relay dropped");
  assert.equal(h.s.state, "reconnecting");
  assert.equal(h.s.reason, "the session to the relay dropped");
  h.s.onRelayUp();
  assert.match(h.s.reason, /waiting for the server/);
  assert.equal(h.s.counters.drops, 2);
  h.s.close("done");
});

test("Refused is surfaced to the next send, once; writes off is refused locally", () => {
  const h = harness();
  h.s.onServerPresent();
  h.hello(1n);
  h.synced(1n, 0n);
  h.ctl({ kind: "refused", writer: "other", code: 1, message: "not you" });
  h.s.writeData(Uint8Array.of(1));
  h.ctl({ kind: "refused", writer: "w1", code: 7, message: "frame too long for this bus" });
  assert.throws(
    () => h.s.writeData(Uint8Array.of(2)),
    (e) => e instanceof xoq.RefusedError && e.code === 7 && /frame too long/.test(e.message),
  );
  h.s.writeData(Uint8Array.of(3));
  assert.deepEqual(h.sent(), [[1], [3]], "the refused call sent nothing");
  assert.equal(h.s.counters.refused, 1);
  assert.equal(h.notices.length, 1);

  const off = harness();
  off.s.onServerPresent();
  off.hello(1n, false);
  off.synced(1n, 0n);
  assert.equal(off.s.state, "connected", "reading works with writes off");
  assert.throws(
    () => off.s.writeAll([Uint8Array.of(1), Uint8Array.of(2)]),
    (e) => e instanceof xoq.RefusedError && e.code === 6 && /--moq-writes/.test(e.message),
  );
  assert.deepEqual(off.sent(), []);
  h.s.close("done");
  off.s.close("done");
});

test("no Hello within syncWaitMs: read-only from the next group on, writes say why", async () => {
  const h = harness();
  h.s.onServerPresent();
  h.data(8, 80); // the relay's backlog
  await sleep(80);
  assert.equal(h.s.state, "connected");
  assert.equal(h.s.readOnly, true);
  assert.equal(h.s.dataGroup, 9);
  h.data(8, 81);
  h.data(9, 90);
  assert.deepEqual(h.delivered, [90]);
  assert.throws(
    () => h.s.writeData(Uint8Array.of(1)),
    (e) => e instanceof xoq.ReadOnlyError && /token/.test(e.message) && /dev\/cmd/.test(e.message),
  );
  // The server sees the writer after all: it becomes writable once synced.
  h.hello(3n);
  assert.equal(h.s.state, "connected", "reads go on while the sync completes");
  assert.throws(() => h.s.writeData(Uint8Array.of(1)), xoq.ReadOnlyError);
  h.data(10, 100);
  h.synced(3n, 11n);
  assert.equal(h.s.readOnly, false);
  h.data(10, 101);
  h.data(11, 110);
  assert.deepEqual(h.delivered, [90, 100, 110]);
  h.s.writeData(Uint8Array.of(2));
  assert.deepEqual(h.sent(), [[2]]);

  const none = harness();
  none.s.onServerPresent();
  await sleep(80);
  assert.equal(none.s.readOnly, true);
  assert.equal(none.s.dataGroup, 0, "no backlog seen: everything from now on");
  h.s.close("done");
  none.s.close("done");
});

test("data waiting for a sync is bounded (oldest dropped, counted)", () => {
  const h = harness({ pendingMax: 3 });
  h.s.onServerPresent();
  for (let i = 0; i < 5; i++) h.data(1, i);
  assert.equal(h.s.pending, 3);
  assert.equal(h.s.counters.pendingDropped, 2);
  h.hello(1n);
  h.synced(1n, 1n);
  assert.deepEqual(h.delivered, [2, 3, 4]);
  h.s.close("done");
});

test("pings go out once connected; Pongs give a min-RTT clock estimate", async () => {
  const h = harness({ pingEveryMs: 20 });
  h.s.onServerPresent();
  h.hello(1n);
  h.synced(1n, 0n);
  await sleep(70);
  const pings = h.writes.filter((w) => w.msg.kind === "ping").map((w) => w.msg);
  assert.ok(pings.length >= 2, `${pings.length} pings`);
  assert.equal(h.s.clock.estimate(), undefined);
  // Answer two: the server's clock is 5 s ahead.
  for (const p of pings.slice(0, 2)) {
    h.ctl({ kind: "pong", writer: "w1", id: p.id, clientUs: p.clientUs, serverUs: p.clientUs + 5_000_000n });
  }
  h.ctl({ kind: "pong", writer: "w1", id: 12345, clientUs: 1n, serverUs: 2n }); // never sent: ignored
  const est = h.s.clock.estimate();
  assert.equal(est.samples, 2);
  assert.ok(Math.abs(est.offsetUs - 5_000_000) < est.rttUs / 2 + 1000, JSON.stringify(est));
  // Pings stop while the link is down.
  h.s.onServerGone();
  const before = h.writes.length;
  await sleep(60);
  assert.equal(h.writes.length, before);
  h.s.close("done");

  const c = new xoq.ClockEstimator();
  c.add(1_000n, 11_000n, 3_000n); // rtt 2000, offset 9000
  c.add(10_000n, 19_600n, 10_800n); // rtt 800, offset 9200
  c.add(20_000n, 40_000n, 30_000n); // rtt 10000
  assert.deepEqual(c.estimate(), { offsetUs: 9200, rttUs: 800, samples: 3 });
  c.add(5n, 0n, 4n); // received before sent: ignored
  assert.equal(c.estimate().samples, 3);
  c.reset();
  assert.equal(c.estimate(), undefined);
});

test("notices, Bye, bad frames and close", async () => {
  const h = harness();
  h.s.onServerPresent();
  h.hello(1n);
  h.synced(1n, 0n);
  h.ctl({ kind: "busState", code: 2 });
  h.ctl({ kind: "deviceLost", reason: "unplugged" });
  h.ctl({ kind: "deviceRestored" });
  assert.deepEqual(
    h.notices.map((n) => n.kind),
    ["busState", "deviceLost", "deviceRestored"],
  );
  h.s.onCtlFrame(Uint8Array.of(0x09));
  h.s.onCtlFrame(new Uint8Array(0));
  assert.equal(h.s.counters.badCtl, 2);
  h.ctl({ kind: "bye", reason: "stopping" });
  assert.equal(h.s.state, "reconnecting");
  assert.match(h.s.reason, /the server stopped \(stopping\)/);
  const waiting = h.s.waitConnected();
  h.s.close("the bus was closed");
  assert.equal(await waiting, false, "close wakes waiters");
  assert.equal(h.s.state, "closed");
  assert.throws(() => h.s.writeData(Uint8Array.of(1)), xoq.LinkClosedError);
  h.hello(2n);
  assert.equal(h.s.state, "closed", "closed is final");
  assert.deepEqual(h.events, ["connected", "reconnecting", "closed"]);
  assert.equal(await h.s.waitConnected(10), false);
});
