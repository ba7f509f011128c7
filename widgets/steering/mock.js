// Mock traits for SteeringLab as the kernel sends them: a generation with marked hits (one of
// them hostile text) and a two-method sweep with its rollouts.

const XSS = "<img src=x onerror=alert(1)>";

function point(method, relative, p, loss, texts) {
  return {
    method, relative, coef: relative * 2, p_success: p, p_lo: Math.max(0, p - 0.2), p_hi: Math.min(1, p + 0.2),
    loss_increase: loss, loss_increase_lo: loss - 0.01, loss_increase_hi: loss + 0.01, kl: loss * 2,
    distinct_2: 0.9, zlib_ratio: 0.7, on_frontier: true,
    rollouts: texts.map((text) => ({ text, hits: [...text.matchAll(/\bangry\b/gi)].map((m) => [m.index, m.index + m[0].length]) })),
  };
}

export function mockState() {
  const actadd = [point("ActAdd", 0, 0, 0, ["so kind", "nice"]), point("ActAdd", 1, 0.5, 0.02, ["so angry", `${XSS} angry`])];
  const recon = [point("SAE reconstruction", 0, 0, 0, ["fine", "ok"]), point("SAE reconstruction", 1, 0.25, 0.05, ["angry now", "calm"])];
  const series = [actadd, recon].map((pts) => ({ name: pts[0].method, x: pts.map((p) => p.loss_increase), y: pts.map((p) => p.p_success), labels: pts.map((p) => `${p.method} ${p.relative}`) }));
  return {
    source: "pair", plus: "Anger", minus: "Calm", feature: 0, layer: 1, positions: "front",
    prompt: "I think you're", words: "angry", relative: 1, seed: 0, n_new: 8, rollouts: 2, point: [0, 1],
    layers: [0, 1], has_sae: true,
    vector: { name: "ActAdd 'Anger' - 'Calm' at layer 1", norm: 2, resid_norm: 4, coef: 2, layer: 1 },
    generation: {
      prompt: "I think you're", relative: 1, coef: 2, seed: 0,
      steered: { text: " so angry, ANGRY!", hits: [[4, 9], [11, 16]] },
      unsteered: { text: ` so kind ${XSS}`, hits: [] },
    },
    sweep: { chart: { kind: "pareto", title: "effect against damage", x: { title: "loss", log: false }, y: { title: "P", log: false }, series, frontier: { x: "min", y: "max" } }, points: [actadd, recon], complete: true, prompt: "I think you're", words: "angry", rollouts: 2 },
    error: "", busy: false,
  };
}
