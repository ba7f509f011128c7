import assert from "node:assert/strict";
import { test } from "node:test";

import { request, RequestError, restoreBuffers } from "./requests.js";

/** A model whose kernel is this test: sent messages are recorded, replies pushed by hand. */
function fakeModel({ sendThrows = false, isStatic = false } = {}) {
  const listeners = new Set();
  const sent = [];
  return {
    sent,
    get: (name) => (name === "__static__" ? isStatic : undefined),
    on: (event, cb) => event === "msg:custom" && listeners.add(cb),
    off: (event, cb) => listeners.delete(cb),
    send(msg) {
      if (sendThrows) throw new Error("no comm");
      sent.push(msg);
    },
    reply: (msg, buffers = []) => [...listeners].forEach((cb) => cb(msg, buffers)),
    listeners,
  };
}

test("an answer resolves with its buffers back in place", async () => {
  const model = fakeModel();
  const p = request(model, "echo", { n: 2 });
  const [msg] = model.sent;
  assert.deepEqual({ ...msg, id: undefined }, { kind: "request", id: undefined, method: "echo", args: { n: 2 } });
  const view = new DataView(new ArrayBuffer(8));
  model.reply({ kind: "answer", id: "someone-else", value: 1, buffer_paths: [] });
  model.reply({ kind: "answer", id: msg.id, value: { a: { dtype: "float32", shape: [2], data: null } }, buffer_paths: [["a", "data"]] }, [view]);
  const value = await p;
  assert.equal(value.a.data, view);
  assert.equal(model.listeners.size, 0); // nothing left listening
});

test("progress is seen, then an error rejects with the kernel's message", async () => {
  const model = fakeModel();
  const seen = [];
  const p = request(model, "sweep", {}, { onProgress: (x) => seen.push(x) });
  const { id } = model.sent[0];
  model.reply({ kind: "progress", id, done: 1, total: 3, text: "a" });
  model.reply({ kind: "progress", id, done: 2, total: 3 });
  model.reply({ kind: "error", id, message: "layer 40 is out of range" });
  await assert.rejects(p, (err) => err instanceof RequestError && err.kind === "error" && err.message === "layer 40 is out of range");
  assert.deepEqual(seen, [{ done: 1, total: 3, text: "a" }, { done: 2, total: 3, text: "" }]);
});

test("aborting sends a cancel and rejects once the kernel confirms", async () => {
  const model = fakeModel();
  const controller = new AbortController();
  const p = request(model, "slow", {}, { signal: controller.signal });
  const { id } = model.sent[0];
  controller.abort();
  assert.deepEqual(model.sent[1], { kind: "cancel", id });
  model.reply({ kind: "cancelled", id });
  await assert.rejects(p, (err) => err.kind === "cancelled");
});

test("silence is reported as a stall, and a later message clears it", async () => {
  const model = fakeModel();
  const stalls = [];
  const p = request(model, "slow", {}, { stallMs: 10, onStall: (on) => stalls.push(on) });
  await new Promise((r) => setTimeout(r, 30));
  const { id } = model.sent[0];
  model.reply({ kind: "answer", id, value: 7, buffer_paths: [] });
  assert.equal(await p, 7);
  assert.deepEqual(stalls, [true, false]);
});

test("without a kernel a request fails at once", async () => {
  await assert.rejects(request(fakeModel({ sendThrows: true }), "x"), (err) => err.kind === "no-kernel");
  await assert.rejects(request(fakeModel({ isStatic: true }), "x"), /exported view/);
  assert.equal(restoreBuffers(null, [[]], ["whole"]), "whole");
});
