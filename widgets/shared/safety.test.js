// Every front-end source file: text reaches the page only as text, and nothing is loaded from
// anywhere but the bundle itself (the widgets work offline and in exported files).

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

function sources(dir = root) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(path));
    else if (/\.(js|ts)$/.test(entry.name) && !/\.test\.js$/.test(entry.name) && entry.name !== "build.mjs") out.push(path);
  }
  return out;
}

test("there are widget sources to check", () => {
  const names = sources().map((p) => p.slice(root.length));
  for (const want of ["attention_view/index.js", "pattern_explorer/index.js", "pair_explorer/index.js", "feature_attribution/index.js", "shared/feature_panel.js", "shared/frame.js", "shared/prompt_view.js", "shared/charts.js", "shared/requests.js"]) {
    assert.ok(names.includes(want), `${want} not found among ${names.join(", ")}`);
  }
});

test("no source writes HTML from strings", () => {
  const sinks = ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment", "DOMParser"];
  for (const path of sources()) {
    const text = readFileSync(path, "utf8");
    for (const sink of sinks) assert.ok(!text.includes(sink), `${path} uses ${sink}`);
  }
});

test("no source loads code or styles from elsewhere", () => {
  for (const path of sources()) {
    // The SVG namespace is a name, not an address: nothing is fetched from it.
    const text = readFileSync(path, "utf8").replaceAll('"http://www.w3.org/2000/svg"', '""');
    assert.ok(!/\bimport\s*\(/.test(text), `${path} has a dynamic import`);
    assert.ok(!/from\s+["']https?:/.test(text) && !/https?:\/\//.test(text), `${path} names a URL`);
    assert.ok(!/@import|fonts\.googleapis|cdn\./i.test(text), `${path} pulls a remote style or CDN`);
  }
});
