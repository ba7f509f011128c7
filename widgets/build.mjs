// Bundle every widget entry point widgets/<name>/index.{js,ts} into attnviz/static/<name>.js:
// one self-contained ES module per widget (everything inlined, no imports left, so it works
// offline and from a wheel), target es2020, minified. widgets/shared/ is a library, not a widget.
//
//   node build.mjs            build once
//   node build.mjs --watch    rebuild on change (Ctrl-C to stop)

import { existsSync, readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "attnviz", "static");
const NOT_WIDGETS = new Set(["node_modules", "shared"]);

function findEntryPoints() {
  const entries = {};
  for (const dirent of readdirSync(here, { withFileTypes: true })) {
    const name = dirent.name;
    if (!dirent.isDirectory() || NOT_WIDGETS.has(name) || name.startsWith(".")) continue;
    const index = ["index.js", "index.ts"].map((f) => join(here, name, f)).find(existsSync);
    if (index) entries[name] = index;
  }
  return entries;
}

const entryPoints = findEntryPoints();
const names = Object.keys(entryPoints).sort();
if (names.length === 0) {
  console.error("attnviz widgets: no entry points (widgets/<name>/index.js) found; nothing built");
  process.exit(1);
}

const options = {
  entryPoints,
  outdir,
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  minify: true,
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
};

function report(result) {
  for (const [file, info] of Object.entries(result.metafile.outputs)) {
    console.log(`  ${relative(process.cwd(), file)}  ${(info.bytes / 1024).toFixed(1)} KiB`);
  }
}

if (process.argv.includes("--watch")) {
  const ctx = await esbuild.context({
    ...options,
    plugins: [
      {
        name: "attnviz-report",
        setup(build) {
          build.onEnd((result) => {
            if (result.errors.length === 0) {
              console.log(`[${new Date().toLocaleTimeString()}] built ${names.join(", ")}`);
              report(result);
            }
          });
        },
      },
    ],
  });
  await ctx.watch();
  console.log("attnviz widgets: watching for changes (Ctrl-C to stop)");
} else {
  try {
    const result = await esbuild.build(options);
    console.log(`attnviz widgets: built ${names.join(", ")}`);
    report(result);
  } catch {
    process.exit(1); // esbuild has already printed the errors
  }
}
