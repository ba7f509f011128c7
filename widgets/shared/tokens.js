// Token text and heatmap geometry, shared by every attnviz widget. Pure functions (no DOM), so
// they run under node --test. Token text is only ever returned as plain strings: callers put it
// into the page through textContent or `title`, never as HTML.

import { scaleValueText } from "./scales.js";

export { formatSigned, formatValue } from "./format.js";

/** Longest side of a large heatmap, in CSS pixels. */
export const HEATMAP_PX = 480;
/** Largest cell of a heatmap (short prompts), in CSS pixels. */
export const MAX_CELL_PX = 26;
/** Labels are at least this far apart (the smallest label font); denser axes label every k-th token. */
export const LABEL_MIN_PX = 9;
/** Up to this many tokens every token is labelled: cells grow to LABEL_MIN_PX (the panel scrolls). */
export const LABEL_ALL_UP_TO = 128;

/** Token text made visible: newlines and tabs as symbols, cut to `maxChars` with an ellipsis. */
export function displayToken(token, maxChars = 14) {
  let s = String(token ?? "")
    .replace(/\r\n|\r|\n/g, "↵")
    .replace(/\t/g, "⇥");
  if (s.length === 0) return "∅";
  if (s.trim().length === 0) s = s.replace(/ /g, "·");
  const chars = Array.from(s); // code points, not UTF-16 halves
  return chars.length > maxChars ? `${chars.slice(0, maxChars - 1).join("")}…` : s;
}

/**
 * CSS pixels per cell of an n x n heatmap: whole pixels when cells are big, else fractional.
 * `labelAll`: up to LABEL_ALL_UP_TO tokens a cell is never smaller than a label (LABEL_MIN_PX),
 * so every token keeps its label and the heatmap grows past maxPx instead.
 */
export function cellSize(n, maxPx = HEATMAP_PX, maxCell = MAX_CELL_PX, labelAll = false) {
  if (n <= 0) return maxCell;
  let px = Math.min(maxCell, maxPx / n);
  if (labelAll && n <= LABEL_ALL_UP_TO) px = Math.max(px, LABEL_MIN_PX);
  return px >= 4 ? Math.floor(px) : px;
}

/** Font size of axis labels for cells of `cellPx`: 11 px where there is room, else 9 px. */
export function labelFontPx(cellPx) {
  return cellPx >= 13 ? 11 : LABEL_MIN_PX;
}

/** Label every `stride`-th cell so that labels sit at least `minPx` apart. */
export function labelStride(cellPx, minPx = LABEL_MIN_PX) {
  return Math.max(1, Math.ceil(minPx / cellPx - 1e-9));
}

/** The cell under a point (x, y) of a width x height box drawn as rows x cols; null outside. */
export function cellAt(x, y, width, height, rows, cols) {
  if (!(width > 0 && height > 0) || x < 0 || y < 0 || x >= width || y >= height) return null;
  const row = Math.min(rows - 1, Math.floor((y / height) * rows));
  const col = Math.min(cols - 1, Math.floor((x / width) * cols));
  return row >= 0 && col >= 0 ? { row, col } : null;
}

/**
 * Tokens [start, end) covered by cell `index` when cells are blocks of `factor` tokens and the
 * picture starts at token `offset` (a zoomed-in window of a long prompt).
 */
export function blockTokens(index, factor, nTokens, offset = 0) {
  const start = offset + index * factor;
  return { start, end: Math.min(nTokens, start + factor) };
}

/**
 * Label text and full title of cell `index` of an axis. When not every token gets a label
 * (pooled blocks, or `sparse`: only every k-th cell is labelled) the text starts with the
 * token's position, so the reader knows where on the axis they are. Positions count from the
 * prompt's first token, also inside a window starting at `offset`.
 */
export function cellLabel(tokens, index, factor = 1, sparse = false, offset = 0) {
  const { start, end } = blockTokens(index, factor, tokens.length, offset);
  if (factor <= 1) {
    const text = sparse || offset > 0 ? `${start}: ${displayToken(tokens[start], 10)}` : displayToken(tokens[start]);
    return { text, title: `${start}: ${tokens[start] ?? ""}` };
  }
  const joined = tokens.slice(start, end).join("");
  const title = `${start}–${end - 1}: ${joined.length > 200 ? `${joined.slice(0, 199)}…` : joined}`;
  return { text: `${start}: ${displayToken(tokens[start], 8)}`, title };
}

/** The labelled cells of an axis of `nCells` cells: [{ index, text, title }]. */
export function axisLabels(tokens, nCells, factor = 1, stride = 1, offset = 0) {
  const out = [];
  for (let i = 0; i < nCells; i += stride) out.push({ index: i, ...cellLabel(tokens, i, factor, stride > 1, offset) });
  return out;
}

/** Position text of cell `index`: "7", or "16–23" for a pooled block. */
export function positionText(index, factor, nTokens, offset = 0) {
  const { start, end } = blockTokens(index, factor, nTokens, offset);
  return factor <= 1 ? `${start}` : `${start}–${end - 1}`;
}

/** "destination 5: " Mary"" style lines naming a cell's two tokens (row = destination). */
export function cellTokens(tokens, row, col, factor = 1, offset = 0) {
  const quote = (i) => {
    const { start, end } = blockTokens(i, factor, tokens.length, offset);
    const text = `"${displayToken(tokens[start], 24)}"`;
    return end - start > 1 ? `${text} …` : text;
  };
  const n = tokens.length;
  return [
    `destination ${positionText(row, factor, n, offset)}: ${quote(row)}`,
    `source ${positionText(col, factor, n, offset)}: ${quote(col)}`,
  ];
}

/**
 * The tooltip of a cell: three lines (destination token, source token, value on the colour
 * `scale`, see scales.js). Destination is the row (the query, the token that attends), source
 * the column (the key).
 */
export function describeCell(tokens, row, col, value, factor = 1, offset = 0, scale = "weights") {
  const pooled = factor > 1 ? ` (max over a ${factor}×${factor} block)` : "";
  const firstToken = blockTokens(col, factor, tokens.length, offset).start === 0 && factor === 1;
  return [...cellTokens(tokens, row, col, factor, offset), scaleValueText(scale, value, firstToken, pooled)];
}

/**
 * The token window [start, end) to show at full resolution after a click on cell {row, col} of a
 * pooled picture (blocks of `factor` tokens starting at token `offset`): `size` tokens (at most
 * the prompt) holding both the clicked destination and source when they are close enough, else
 * ending at the destination.
 */
export function zoomWindow(cell, factor, offset, nTokens, size) {
  const len = Math.max(1, Math.min(size, nTokens));
  const dest = offset + cell.row * factor + Math.floor(factor / 2);
  const src = offset + cell.col * factor + Math.floor(factor / 2);
  const wanted = dest - src < len ? Math.round((dest + src) / 2) - Math.floor(len / 2) : dest + 1 - len;
  const start = Math.max(0, Math.min(nTokens - len, wanted));
  return [start, start + len];
}
