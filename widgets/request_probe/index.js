// RequestProbe (attnviz/widgets/probe.py): the smoke widget of the request protocol and the
// charts. Each button sends a request through the frame (progress bar, cancel button, error
// box); each reply is listed with data-* attributes for the browser tests, and every raw
// message the kernel sends is counted per request id (one final reply each, progress between).
// Traits read: chart (a chart spec, drawn below), steps_run, cancelled_jobs.

import { decodeArray } from "../shared/arrays.js";
import { drawChart } from "../shared/charts.js";
import { el, textEl } from "../shared/controls.js";
import { createFrame } from "../shared/frame.js";

/** The requests the buttons send: [test id, label, method, args]. */
export const BUTTONS = [
  ["echo", "echo", "echo", { n: 5, text: "<b>not bold</b>" }],
  ["fail", "fail", "fail", { message: "probe failure: as asked" }],
  ["crash", "crash", "crash", {}],
  ["slow", "slow job", "slow", { steps: 40, delay: 0.1 }],
  ["chart", "chart", "chart", { kind: "pareto", n: 12 }],
  ["unknown", "unknown", "no_such_method", {}],
];

/** Tally of raw kernel messages per request id: { id: { progress, final, kinds } } (the frame's heartbeat pongs left out). */
export function tally(counts, msg) {
  if (!msg || typeof msg.id !== "string" || msg.kind === "pong") return counts;
  const entry = counts[msg.id] ?? { progress: 0, final: 0, kinds: [] };
  if (msg.kind === "progress") entry.progress += 1;
  else {
    entry.final += 1;
    entry.kinds.push(msg.kind);
  }
  counts[msg.id] = entry;
  return counts;
}

function render({ model, el: host }) {
  const buttons = BUTTONS.map(([testid, label]) => textEl("button", "av-go", label, { type: "button", "data-testid": `ask-${testid}` }));
  const frame = createFrame(model, {
    testid: "request-probe",
    controls: buttons,
    statusText: () => `steps run in the kernel: ${model.get("steps_run") ?? 0}`,
  });
  const { root, body } = frame;
  const replies = el("ol", "", { "data-testid": "replies" });
  const chartBox = el("div", "", { "data-testid": "chart-box" });
  body.append(replies, chartBox);
  host.replaceChildren(root);

  const counts = {};
  const onMessage = (msg) => {
    tally(counts, msg);
    root.dataset.messages = JSON.stringify(counts);
  };
  model.on("msg:custom", onMessage);

  BUTTONS.forEach(([, label, method, args], i) => {
    buttons[i].addEventListener("click", async () => {
      const row = textEl("li", "", `${label}: waiting`, { "data-testid": "reply", "data-method": method, "data-status": "pending" });
      replies.append(row);
      const outcome = await frame.call(method, args, { label });
      row.dataset.status = outcome.status;
      if (outcome.status === "answer") {
        const value = outcome.value;
        if (value?.array) row.dataset.array = Array.from(decodeArray(value.array).data).join(",");
        row.textContent = `${label}: ${JSON.stringify(value?.args ?? value?.kind ?? value)}`;
      } else {
        row.textContent = `${label}: ${outcome.status}${outcome.message ? ` (${outcome.message})` : ""}`;
      }
    });
  });

  function renderChart() {
    const spec = model.get("chart") ?? {};
    chartBox.replaceChildren(...(spec.series ? [drawChart(spec)] : []));
  }

  const renderState = () => {
    root.dataset.stepsRun = String(model.get("steps_run") ?? 0);
    root.dataset.cancelledJobs = (model.get("cancelled_jobs") ?? []).join(",");
    frame.renderStatus();
  };
  frame.listen({ "change:chart": renderChart, "change:steps_run": renderState, "change:cancelled_jobs": renderState });
  renderChart();
  renderState();
  return () => {
    model.off("msg:custom", onMessage);
    frame.dispose();
  };
}

export default { render };
