// Head thumbnails: one small picture per head, a button that selects it.

import { el, textEl } from "./controls.js";
import { drawPixels } from "./heatmap.js";
import { colorMax, patternPixels } from "./patterns.js";

/**
 * One button per head of a decoded [heads, rows, cols] pattern (`shape`; null: none), each a
 * `px`-pixel picture of `slice(h)` (scaled by colorMax, `contrast` as the widgets' checkbox)
 * with the caption `caption(h)`; `onSelect(h)` on click.
 */
export function renderThumbs(container, shape, { slice, px, contrast = false, caption, onSelect }) {
  container.replaceChildren();
  if (!shape) return;
  const [heads, rows, cols] = shape;
  container.style.gridTemplateColumns = `repeat(${Math.min(heads, Math.ceil(Math.sqrt(heads)))}, auto)`;
  for (let h = 0; h < heads; h++) {
    const button = el("button", "av-thumb", { type: "button", "data-testid": `thumb-${h}`, "data-head": String(h) });
    button.title = `head ${h}`;
    const canvas = el("canvas");
    const values = slice(h);
    const vmax = colorMax(values, rows, cols, contrast);
    drawPixels(canvas, () => patternPixels(values, rows, cols, vmax), rows, cols, px / Math.max(rows, cols, 1));
    button.append(canvas, textEl("span", "av-caption", caption(h)));
    button.addEventListener("click", () => onSelect(h));
    container.append(button);
  }
}

/** Press the thumbnail of head `h` (aria-pressed) and release the others. */
export function markThumb(container, h) {
  for (const button of container.querySelectorAll("button[data-head]")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.head) === h));
  }
}
