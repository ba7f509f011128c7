// HeadLoadingExplorer's sizes, styles and small DOM parts (bars per head, cluster swatches).

import { el, textEl } from "../shared/controls.js";
import { fixed } from "../shared/format.js";
import { clusterColor, css } from "./layout.js";

/** CSS width of the heatmap (features): with the head labels it fits an 800 px notebook. */
export const HEATMAP_W = 640;
export const LABEL_W = 118;
export const MAP_PX = 300;
export const CHART = { width: 272, height: 210 };
export const LISTED = 60; // a cluster's features listed as buttons

export const STYLE = `
.attnviz .hl-row { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; margin-bottom: 10px; width: 100%; }
.attnviz .hl-heat { display: grid; grid-template-columns: ${LABEL_W}px auto; }
.attnviz .hl-heads { font: 11px var(--jp-code-font-family, ui-monospace, monospace); text-align: right; padding-right: 6px; white-space: nowrap; overflow: hidden; }
.attnviz .hl-wrap { position: relative; line-height: 0; }
.attnviz .hl-band { position: relative; height: 12px; margin-bottom: 2px; }
.attnviz .hl-band span { position: absolute; top: 0; height: 12px; cursor: pointer; }
.attnviz .hl-band span[aria-pressed="true"] { outline: 2px solid #1b1b1b; z-index: 1; }
.attnviz .hl-edge { position: absolute; top: 0; bottom: 0; width: 1px; background: rgba(255,255,255,0.9); pointer-events: none; }
.attnviz .hl-pick { position: absolute; top: -1px; bottom: -1px; outline: 2px dashed #0b7a3b; pointer-events: none; display: none; }
.attnviz .hl-list { max-height: 300px; overflow: auto; }
.attnviz .hl-list button { font: inherit; cursor: pointer; border: 1px solid transparent; background: none; padding: 0 4px; color: inherit; }
.attnviz .hl-list button[aria-pressed="true"] { border-color: #7a2e6e; background: rgba(122,46,110,0.1); }
.attnviz .hl-bars { display: grid; grid-template-columns: auto 160px auto; gap: 1px 6px; align-items: center; font-size: 11px; margin: 4px 0 8px; }
.attnviz .hl-bars .hl-bar { height: 9px; background: #7a2e6e; }
.attnviz .hl-detail { flex: 1 1 320px; min-width: 300px; max-width: 620px; }
.attnviz .hl-features { display: flex; flex-wrap: wrap; gap: 3px; margin: 4px 0 8px; }
.attnviz .hl-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; vertical-align: -1px; margin-right: 4px; }
`;

/** Bars, one per head: label, bar (length relative to the largest), value. */
export function barRows(labels, values, testid, format = (v) => fixed(v, 3)) {
  const box = el("div", "hl-bars", { "data-testid": testid });
  const top = Math.max(...values, 1e-12);
  values.forEach((v, h) => {
    const bar = el("div", "hl-bar", { "data-testid": `${testid}-bar`, "data-head": String(h), "data-value": String(v) });
    bar.style.width = `${Math.max(1, Math.round((160 * Math.max(0, v)) / top))}px`;
    const track = el("div");
    track.append(bar);
    box.append(textEl("span", "", labels[h] ?? `head ${h}`), track, textEl("span", "", format(v)));
  });
  return box;
}

export function swatch(c) {
  const s = el("span", "hl-swatch");
  s.style.background = css(clusterColor(c));
  return s;
}
