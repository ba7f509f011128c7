// Head thumbnails: one small picture per head, a button that selects it.

import { el, textEl } from "./controls.js";
import { drawPixels } from "./heatmap.js";
import { patternPixels } from "./patterns.js";
import { scaleRange } from "./scales.js";

/**
 * One button per head of a decoded [heads, rows, cols] pattern (`shape`; null: none), each a
 * `px`-pixel picture of `slice(h)` on the widget's colour `scale` (scales.js) with the caption
 * `caption(h)` (and the tooltip `title(h)`); `onSelect(h)` on click.
 */
export function renderThumbs(container, shape, { slice, px, scale = "weights", caption, title = (h) => `head ${h}`, onSelect }) {
  container.replaceChildren();
  if (!shape) return;
  const [heads, rows, cols] = shape;
  container.style.gridTemplateColumns = `repeat(${Math.min(heads, Math.ceil(Math.sqrt(heads)))}, auto)`;
  for (let h = 0; h < heads; h++) {
    const button = el("button", "av-thumb", { type: "button", "data-testid": `thumb-${h}`, "data-head": String(h) });
    button.title = title(h);
    const canvas = el("canvas");
    const values = slice(h);
    const { vmin, vmax } = scaleRange(scale);
    drawPixels(canvas, () => patternPixels(values, rows, cols, vmax, vmin), rows, cols, px / Math.max(rows, cols, 1));
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
