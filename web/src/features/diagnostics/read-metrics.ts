/**
 * What a version's metrics and method metadata hold that the catalog can plot. The registry
 * stores both as free JSON; the shapes read here (documented in web/README.md) are:
 *   spectra:    metrics.diagnostics.modules = { "<module>": { sigma: number[], erank?, srank?, kAt?, fro?, spec?, nuc? } }
 *               (also metrics.spectra as that map, or as [{ module, sigma, ... }])
 *   loss curve: metrics.lossCurve (or methodMetadata.lossCurve) = [{ step, loss?, evalLoss? }]
 *               (or columnar { step: [], loss: [], evalLoss: [] })
 * Anything else is ignored, so an unknown or partial shape reads as "not computed yet".
 */

export interface ModuleSpectrum {
  module: string;
  sigma: number[];
  erank: number | null;
  srank: number | null;
  k90: number | null;
  fro: number | null;
}

export interface LossPoint {
  step: number;
  loss: number | null;
  evalLoss: number | null;
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const finite = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const numbers = (x: unknown): number[] | null =>
  Array.isArray(x) && x.length > 0 && x.every((v) => typeof v === 'number' && Number.isFinite(v)) ? x.map(Number) : null;

function spectrum(module: string, x: unknown): ModuleSpectrum | null {
  if (!isRecord(x)) return null;
  const sigma = numbers(x.sigma ?? x.singularValues);
  if (!sigma) return null;
  const kAt = isRecord(x.kAt) ? x.kAt : isRecord(x.k_at) ? x.k_at : {};
  return { module, sigma, erank: finite(x.erank), srank: finite(x.srank), k90: finite(kAt['0.9']), fro: finite(x.fro) };
}

export function readSpectra(metrics: unknown): ModuleSpectrum[] {
  if (!isRecord(metrics)) return [];
  const source = isRecord(metrics.diagnostics) ? metrics.diagnostics.modules : metrics.spectra;
  const out: ModuleSpectrum[] = [];
  if (isRecord(source)) {
    for (const [module, x] of Object.entries(source)) {
      const s = spectrum(module, x);
      if (s) out.push(s);
    }
  } else if (Array.isArray(source)) {
    for (const x of source) {
      if (isRecord(x) && typeof x.module === 'string') {
        const s = spectrum(x.module, x);
        if (s) out.push(s);
      }
    }
  }
  return out.sort((a, b) => a.module.localeCompare(b.module, undefined, { numeric: true }));
}

function lossFrom(x: unknown): LossPoint[] {
  if (Array.isArray(x)) {
    return x
      .filter(isRecord)
      .map((p) => ({ step: finite(p.step) ?? Number.NaN, loss: finite(p.loss), evalLoss: finite(p.evalLoss ?? p.eval_loss) }))
      .filter((p) => Number.isFinite(p.step) && (p.loss !== null || p.evalLoss !== null));
  }
  if (isRecord(x) && Array.isArray(x.step)) {
    const loss = Array.isArray(x.loss) ? x.loss : [];
    const evalLoss = Array.isArray(x.evalLoss) ? x.evalLoss : [];
    return lossFrom(x.step.map((step, i) => ({ step, loss: loss[i], evalLoss: evalLoss[i] })));
  }
  return [];
}

export function readLossCurve(metrics: unknown, methodMetadata: unknown): LossPoint[] {
  const fromMetrics = isRecord(metrics) ? lossFrom(metrics.lossCurve ?? metrics.loss_curve) : [];
  if (fromMetrics.length > 0) return fromMetrics.sort((a, b) => a.step - b.step);
  return (isRecord(methodMetadata) ? lossFrom(methodMetadata.lossCurve ?? methodMetadata.loss_curve) : []).sort((a, b) => a.step - b.step);
}

/** Top-level scalar metrics (accuracy, perplexity, …), for tables and compare. */
export function scalarMetrics(metrics: unknown): [string, number | string | boolean][] {
  if (!isRecord(metrics)) return [];
  return Object.entries(metrics).filter((e): e is [string, number | string | boolean] =>
    ['number', 'string', 'boolean'].includes(typeof e[1]),
  );
}
