// The prompt as running text, each token shaded by the attention from (or to) one picked token
// of the selected head: the attention read as a reader reads the prompt. Click a token to pick
// it. Token text reaches the page only through textContent and `title`.

import { el, fillSelect, textEl } from "./controls.js";
import { scaleColor } from "./heatmap.js";
import { scaleNumber } from "./scales.js";

/** [value, text] of the direction selector. */
export const DIRECTIONS = [
  ["from", "attention from the picked token"],
  ["to", "attention to the picked token"],
];

/**
 * The shade of each of `n` tokens: for direction "from", row `pick` of the rows x cols slice
 * (what the picked token attends to); for "to", column `pick` (who attends to it). Values are
 * mapped onto [0, 1] of the colour scale by `range` ({ vmin, vmax }); masked cells are null.
 */
export function tokenShades(slice, n, pick, direction, { vmin, vmax }) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const v = direction === "from" ? slice[pick * n + i] : slice[i * n + pick];
    out.push(Number.isNaN(v) ? null : { value: v, t: Math.min(1, Math.max(0, (v - vmin) / (vmax - vmin || 1))) });
  }
  return out;
}

/** The view: a direction selector, a line saying what is shown, and the tokens. */
export function createTokenText() {
  const node = el("div", "av-token-text", { "data-testid": "token-text" });
  const direction = el("select", "", { "data-testid": "token-direction", "aria-label": "token view direction" });
  fillSelect(direction, DIRECTIONS, "from");
  const about = textEl("div", "av-axis-title", "", { "data-testid": "token-text-about" });
  const text = el("div", "av-token-flow", { "data-testid": "token-flow" });
  node.append(direction, about, text);
  let last = null;
  let pick = null;

  function render(args) {
    last = args;
    const { tokens, slice, factor, offset, range, scale } = args;
    text.replaceChildren();
    if (!slice || factor > 1) {
      about.textContent = slice ? "The token view needs one cell per token: zoom into a window of the prompt." : "";
      return;
    }
    const n = Math.round(Math.sqrt(slice.length));
    if (pick === null || pick >= n) pick = n - 1;
    const dir = direction.value;
    const shades = tokenShades(slice, n, pick, dir, range);
    const picked = JSON.stringify(tokens[offset + pick] ?? "");
    about.textContent = `${dir === "from" ? "What token" : "Which tokens attend to token"} ${offset + pick} (${picked}) ${dir === "from" ? "attends to" : ""} — click a token to pick another`;
    for (let i = 0; i < n; i++) {
      const shade = shades[i];
      const token = tokens[offset + i] ?? "";
      const span = textEl("span", i === pick ? "av-tok av-tok-picked" : "av-tok", token.length ? token : "∅", {
        "data-testid": "token",
        "data-index": String(offset + i),
      });
      if (shade) {
        const [r, g, b] = scaleColor(shade.t);
        span.style.background = `rgb(${r}, ${g}, ${b})`;
        if (shade.t > 0.6) span.style.color = "#fff";
      }
      span.title = `${offset + i}: ${token}\n${shade ? scaleNumber(scale, shade.value) : "masked: later than the picked token"}`;
      span.addEventListener("click", () => {
        pick = i;
        render(last);
      });
      text.append(span);
    }
  }

  direction.addEventListener("change", () => last && render(last));
  return {
    node,
    render,
    /** The picked token's position in the shown slice. */
    get pick() {
      return pick;
    },
  };
}
