// The bounded queue between the MoQ readers and the application.

import assert from "node:assert/strict";
import test from "node:test";

import { Inbox } from "../dist/index.js";

test("Inbox delivers in order, to waiters first, and a timeout loses nothing", async () => {
  const q = new Inbox(10);
  const waiting = q.recv();
  q.push(1);
  assert.equal(await waiting, 1);
  assert.equal(await q.recv(5), undefined, "timeout with nothing queued");
  q.push(2);
  q.push(3);
  assert.equal(await q.recv(5), 2);
  assert.equal(q.tryRecv(), 3);
  assert.equal(q.tryRecv(), undefined);
  // A timed-out recv must not swallow the item pushed after it gave up.
  assert.equal(await q.recv(1), undefined);
  q.push(4);
  assert.equal(await q.recv(0), 4);
});

test("Inbox drops the oldest by weight when full, and ends cleanly", async () => {
  const q = new Inbox(8, (b) => b.length);
  for (let i = 0; i < 5; i++) q.push(new Uint8Array(3).fill(i));
  assert.equal(q.dropped, 9, "three 3-byte chunks dropped to stay within 8 bytes");
  assert.deepEqual([...(await q.recv())], [3, 3, 3]);
  q.end();
  assert.deepEqual([...(await q.recv())], [4, 4, 4], "queued items survive end()");
  assert.equal(await q.recv(), undefined);
  assert.equal(q.ended, true);
  const r = new Inbox(4);
  const pending = r.recv();
  r.end();
  assert.equal(await pending, undefined, "end() wakes waiters");
  const seen = [];
  const s = new Inbox(5000);
  for (let i = 0; i < 3000; i++) s.push(i);
  s.end();
  for await (const x of s) seen.push(x);
  assert.deepEqual(seen, Array.from({ length: 3000 }, (_, i) => i), "compaction keeps order");
});
