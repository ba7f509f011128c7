// The widgets' one style sheet, scoped under .attnviz (JupyterLab's theme variables first).

export const CSS = `
.attnviz { position: relative; font: 12px/1.35 var(--jp-ui-font-family, system-ui, sans-serif);
  color: var(--jp-ui-font-color1, #222); padding: 4px 0; }
.attnviz .av-controls { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-bottom: 6px; }
.attnviz textarea.av-prompt { flex: 1 1 320px; min-width: 200px; padding: 4px 6px; font: inherit;
  line-height: 1.4; white-space: pre; overflow: auto; resize: vertical; box-sizing: border-box;
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px;
  background: var(--jp-layout-color1, #fff); color: inherit; }
.attnviz select, .attnviz button.av-go { font: inherit; padding: 3px 6px; }
.attnviz .av-status { color: var(--jp-ui-font-color2, #666); margin: 2px 0 6px; min-height: 16px; }
.attnviz .av-status.av-busy { color: #a15c00; font-weight: 600; }
.attnviz .av-note { color: var(--jp-ui-font-color2, #666); font-style: italic; margin: 0 0 6px; }
.attnviz .av-error { display: none; margin: 4px 0 8px; padding: 6px 8px; border: 1px solid #c62828;
  border-left-width: 4px; border-radius: 3px; background: #fdecea; color: #8e1c1c; white-space: pre-wrap; }
.attnviz .av-error-note { display: block; margin-top: 2px; font-size: 11px; color: #6d2a2a; }
.attnviz .av-body { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
.attnviz .av-stale { opacity: 0.45; transition: opacity 0.2s; }
.attnviz .av-thumbs { display: grid; gap: 6px; }
.attnviz button.av-thumb { display: flex; flex-direction: column; align-items: center; gap: 2px;
  padding: 3px; border: 2px solid transparent; border-radius: 4px; background: none; cursor: pointer; color: inherit; font: inherit; }
.attnviz button.av-thumb:hover { border-color: var(--jp-border-color1, #ccc); }
.attnviz button.av-thumb[aria-pressed="true"] { border-color: #7a2e6e; background: rgba(122, 46, 110, 0.08); }
.attnviz button.av-thumb canvas { display: block; border: 1px solid var(--jp-border-color2, #ddd); }
.attnviz .av-caption { font-size: 11px; text-align: center; white-space: pre; line-height: 1.25; }
.attnviz .av-panels { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
.attnviz .av-plot { display: grid; grid-template-columns: auto auto; grid-template-rows: auto auto auto; }
.attnviz .av-panel-title { font-weight: 600; padding-bottom: 4px; }
.attnviz .av-axis-title { color: var(--jp-ui-font-color2, #666); font-size: 11px; padding-bottom: 7px; }
.attnviz .av-ylabels, .attnviz .av-xlabels { position: relative; }
.attnviz .av-label { position: absolute; white-space: pre; overflow: hidden;
  font: 11px/1 var(--jp-code-font-family, ui-monospace, "DejaVu Sans Mono", monospace); color: var(--jp-ui-font-color1, #333); }
.attnviz .av-ylabels .av-label { right: 6px; text-align: right; }
.attnviz .av-xlabels .av-label { top: 4px; writing-mode: vertical-rl; transform: rotate(180deg); text-align: end; }
.attnviz .av-label.av-hot { color: #7a2e6e; font-weight: 700; }
.attnviz .av-label.av-float { display: none; z-index: 2; color: #7a2e6e; font-weight: 700; background: var(--jp-layout-color1, #fff); }
.attnviz .av-panel { max-width: 100%; overflow-x: auto; }
.attnviz .av-panel[data-pending="true"] .av-panel-title::after { content: " · computing…"; color: #a15c00; font-weight: 600; }
.attnviz .av-token-text { margin-top: 10px; max-width: 900px; }
.attnviz .av-token-flow { white-space: pre-wrap; word-break: break-word; line-height: 1.8; margin-top: 4px;
  font: 12px/1.8 var(--jp-code-font-family, ui-monospace, "DejaVu Sans Mono", monospace); }
.attnviz .av-tok { border-radius: 2px; cursor: pointer; box-shadow: inset 0 0 0 1px rgba(0, 0, 0, 0.06); }
.attnviz .av-tok-picked { outline: 2px solid #1b1b1b; }
.attnviz .av-canvas-wrap { position: relative; line-height: 0; }
.attnviz canvas.av-heatmap { display: block; border: 1px solid var(--jp-border-color2, #ddd); cursor: crosshair; }
.attnviz .av-hover, .attnviz .av-selected { position: absolute; display: none; pointer-events: none; box-sizing: border-box; }
.attnviz .av-hover { outline: 2px solid #1b1b1b; }
.attnviz .av-selected { outline: 2px dashed #0b7a3b; }
.attnviz .av-tooltip { position: absolute; display: none; pointer-events: none; z-index: 10; padding: 5px 7px;
  border-radius: 4px; background: rgba(30, 30, 30, 0.92); color: #fff; white-space: pre;
  font: 11px/1.4 var(--jp-code-font-family, ui-monospace, "DejaVu Sans Mono", monospace); }
.attnviz .av-legend { display: flex; align-items: center; gap: 6px; margin-top: 8px;
  color: var(--jp-ui-font-color2, #666); font-size: 11px; flex-wrap: wrap; }
.attnviz .av-legend canvas { height: 10px; width: 160px; border: 1px solid var(--jp-border-color2, #ddd); }
.attnviz .av-hatched { background: repeating-linear-gradient(135deg, #b8b8b8 0 1.5px, #f2f2f2 1.5px 5px); }
.attnviz .av-swatch { display: inline-block; width: 10px; height: 10px; border: 1px solid #999; margin-left: 8px; }
.attnviz label.av-check { display: inline-flex; align-items: center; gap: 3px; cursor: pointer; user-select: none; }
.attnviz table.av-table { border-collapse: collapse; font-size: 11.5px; }
.attnviz table.av-table th, .attnviz table.av-table td { padding: 2px 8px; border-bottom: 1px solid var(--jp-border-color2, #e3e3e3); text-align: right; white-space: nowrap; }
.attnviz table.av-table th { color: var(--jp-ui-font-color2, #555); font-weight: 600; }
.attnviz table.av-table td.av-left, .attnviz table.av-table th.av-left { text-align: left; }
.attnviz table.av-table tr.av-total td { font-weight: 700; border-top: 2px solid var(--jp-border-color1, #999); }
.attnviz button.av-feature { font: 11px/1.2 var(--jp-code-font-family, ui-monospace, monospace); padding: 1px 5px; cursor: pointer;
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px; background: var(--jp-layout-color2, #f3f3f3); color: inherit; }
.attnviz button.av-feature[aria-pressed="true"] { background: #7a2e6e; color: #fff; border-color: #7a2e6e; }
.attnviz .av-bar { display: inline-block; height: 9px; vertical-align: middle; }
.attnviz .av-context { font: 12px/1.7 var(--jp-code-font-family, ui-monospace, monospace); white-space: pre-wrap; margin: 2px 0 6px; }
.attnviz .av-context span.av-tok { border-radius: 2px; }
.attnviz .av-context span.av-center { outline: 1.5px solid #1b1b1b; }
.attnviz .av-strip { max-height: 240px; overflow: auto; }
.attnviz .av-strip span.av-tok { cursor: pointer; }
.attnviz .av-strip span.av-tok:hover { outline: 1px dotted #1b1b1b; }
.attnviz .av-headbars { display: inline-flex; align-items: flex-end; gap: 1px; height: 14px; }
.attnviz .av-headbar { display: inline-block; width: 5px; background: #7a2e6e; }
.attnviz .av-dfa { display: flex; gap: 6px; align-items: flex-start; margin: 4px 0; }
.attnviz .av-dfa-rows { font: 11px var(--jp-code-font-family, ui-monospace, monospace); white-space: pre; text-align: right; }
.attnviz .av-progress { display: none; align-items: center; gap: 8px; margin: 0 0 6px; }
.attnviz .av-progress progress { width: 220px; height: 10px; }
.attnviz .av-progress .av-progress-text { color: var(--jp-ui-font-color2, #666); font-size: 11px; }
.attnviz .av-chart { font: 11px/1.2 var(--jp-ui-font-family, system-ui, sans-serif); }
.attnviz .av-chart svg { display: block; overflow: visible; }
.attnviz .av-chart .av-chart-title { font-weight: 600; padding-bottom: 2px; }
.attnviz .av-chart .av-chart-legend { display: flex; gap: 10px; flex-wrap: wrap; margin-top: 4px; color: var(--jp-ui-font-color2, #555); }
.attnviz .av-chart .av-chart-key { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; vertical-align: -1px; }
.attnviz .av-chart circle.av-point:hover, .attnviz .av-chart rect.av-point:hover { stroke: #1b1b1b; stroke-width: 2; }
`;
