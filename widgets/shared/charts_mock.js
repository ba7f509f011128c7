// Mock chart specs as charts.py chart_spec sends them: numbers as float32 wire arrays (the
// bytes ipywidgets delivers as a DataView), and one with plain lists.

function wire(values) {
  const data = new Float32Array(values);
  return { dtype: "float32", shape: [values.length], data: new DataView(data.buffer) };
}

/** A steering-sweep style Pareto chart: 8 points, one NaN, frontier low x / high y. */
export function paretoSpec() {
  const x = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, NaN];
  const y = [0.2, 0.6, 0.5, 0.9, 0.8, 0.95, 0.7, 1];
  return {
    kind: "pareto",
    title: "steering sweep",
    x: { title: "KL", log: false },
    y: { title: "effect", log: false },
    series: [{ name: "head 4", x: wire(x), y: wire(y), labels: x.map((_, i) => `alpha ${i}`) }],
    frontier: { x: "min", y: "max" },
  };
}

/** A log-log bar chart of two series (one value <= 0, which a log axis cannot show). */
export function logBarsSpec() {
  return {
    kind: "bar",
    x: { title: "L0", log: true },
    y: { title: "count", log: true },
    series: [
      { name: "q", x: [1, 10, 100, 1000], y: [3, 30, 0, 7] },
      { name: "k", x: [1, 10, 100, 1000], y: [1, 2, 4, 8], error: [0.5, 0.5, 1, 2] },
    ],
  };
}
