import assert from "node:assert/strict";
import { test } from "node:test";

import { BUTTONS, tally } from "./index.js";

test("raw kernel messages are tallied per request: progress, then one final reply", () => {
  const counts = {};
  for (const msg of [
    { kind: "progress", id: "a", done: 1 },
    { kind: "progress", id: "a", done: 2 },
    { kind: "answer", id: "a" },
    { kind: "cancelled", id: "b" },
    { kind: "answer" }, // not a reply to anyone
  ]) {
    tally(counts, msg);
  }
  assert.deepEqual(counts, { a: { progress: 2, final: 1, kinds: ["answer"] }, b: { progress: 0, final: 1, kinds: ["cancelled"] } });
});

test("the buttons ask for every kind of reply", () => {
  const methods = BUTTONS.map(([, , method]) => method);
  for (const want of ["echo", "fail", "crash", "slow", "chart", "no_such_method"]) assert.ok(methods.includes(want), want);
});
