import assert from "node:assert/strict";
import { test } from "node:test";

import { createStaticModel, reviveState } from "./index.js";

test("binary payloads come back as DataViews over the same bytes", () => {
  const bytes = Uint8Array.from([0, 1, 254, 255]);
  const state = reviveState({ a: { data: { $bytes: Buffer.from(bytes).toString("base64") }, shape: [4] }, list: [1, { $bytes: "" }] });
  assert.ok(state.a.data instanceof DataView);
  assert.deepEqual(Array.from(new Uint8Array(state.a.data.buffer)), Array.from(bytes));
  assert.deepEqual(state.a.shape, [4]);
  assert.equal(state.list[1].byteLength, 0);
  // an object that merely has a $bytes key among others is left alone
  assert.deepEqual(reviveState({ $bytes: "AA==", other: 1 }), { $bytes: "AA==", other: 1 });
});

test("the static model fires change events on set and marks itself static", () => {
  const model = createStaticModel({ head: 0, prompt: "x" });
  assert.equal(model.get("__static__"), true);
  const seen = [];
  const onHead = (v) => seen.push(["head", v]);
  model.on("change:head", onHead);
  model.on("change", () => seen.push(["any"]));
  model.set("head", 3);
  model.set("head", 3); // unchanged: no event
  model.save_changes();
  assert.deepEqual(seen, [["head", 3], ["any"]]);
  model.off("change:head", onHead);
  model.set("head", 4);
  assert.deepEqual(seen.at(-1), ["any"]);
  assert.equal(model.get("head"), 4);
});
