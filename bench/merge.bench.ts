/**
 * Merging N LoRA adapters of a Llama-2-7B shape (q/k/v/o 4096², gate/up 11008x4096,
 * down 4096x11008), ours vs PEFT's add_weighted_adapter on the same factors in the same
 * run, then per-module spectra: ours (factored SVD, no ΔW) vs the dense baseline
 * (torch.linalg.svdvals of s·BA), and ours over all 32 layers; then rank reduction of the
 * same modules to r/2 (ours: factored SVD + balanced re-factoring, METHODS §3.1; the peer:
 * torch.svd_lowrank of the dense s·BA with q = r/2 + 10, niter = 4, re-factored as U√S, √S Vᵀ).
 * Prints seconds and peak RSS.
 *
 *   node bench/merge.bench.ts [--layers 1] [--n 3] [--rank 16] [--combinations cat,linear,svd,ties]
 *                             [--density 0.5] [--spectra-layers 1] [--all-layers 32] [--svd-method exact|randomized]
 *                             [--torch-device cpu|cuda]
 *
 * On a GPU machine (scripts/gpu-check): `--torch-device cuda` puts PEFT's base and factors on the GPU;
 * ours runs on the resolved backend (with CUDA, the randomized SVDs' products on the device).
 *
 * Needs LOWRANK_PYTHON (scripts/lib/pyenv.sh) and the addon (scripts/build-native).
 * Dense svd types (ties_svd, ...) take minutes per 7B module on both sides: opt in.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { backendInfo } from '../worker/src/native/backend.ts';
import { reduceRank } from '../worker/src/native/compress.ts';
import { blasThreads, type LoraModule, philox, spectra } from '../worker/src/native/linalg.ts';
import { COMBINATION_TYPES, type CombinationType, type MergeInput, mergeAdapters } from '../worker/src/native/merge.ts';

const SHAPES: Record<string, [number, number]> = {
  q_proj: [4096, 4096],
  k_proj: [4096, 4096],
  v_proj: [4096, 4096],
  o_proj: [4096, 4096],
  gate_proj: [11008, 4096],
  up_proj: [11008, 4096],
  down_proj: [4096, 11008],
};

const { values } = parseArgs({
  options: {
    layers: { type: 'string', default: '1' },
    n: { type: 'string', default: '3' },
    rank: { type: 'string', default: '16' },
    combinations: { type: 'string', default: 'cat,linear,svd,ties' },
    density: { type: 'string', default: '0.5' },
    'spectra-layers': { type: 'string', default: '1' },
    'all-layers': { type: 'string', default: '32' },
    'svd-method': { type: 'string', default: 'exact' },
    'torch-device': { type: 'string', default: 'cpu' },
  },
});
const layers = Number(values.layers);
const n = Number(values.n);
const rank = Number(values.rank);
const density = Number(values.density);
const spectraLayers = Number(values['spectra-layers']);
const allLayers = Number(values['all-layers']);
const svdMethod = values['svd-method'] === 'randomized' ? 'randomized' : 'exact';
const isCombination = (c: string): c is CombinationType => (COMBINATION_TYPES as readonly string[]).includes(c);
const combinations = values.combinations.split(',').filter(isCombination);
const py = process.env.LOWRANK_PYTHON;
if (!py) throw new Error('LOWRANK_PYTHON is not set: source scripts/lib/pyenv.sh and run lowrank_ensure_pyenv');

/** Peak resident set of this process so far (Linux VmHWM), MB. */
const peakRssMb = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;

function makeModule(out: number, inDim: number, stream: number, scale: number): LoraModule {
  const A = philox(1, stream, rank * inDim, 'normal');
  const B = philox(1, stream + 1, out * rank, 'normal');
  if (!(A instanceof Float32Array) || !(B instanceof Float32Array)) throw new Error('philox normal returns Float32Array');
  return { r: rank, in: inDim, out, scale, A: A.map((v) => v / Math.sqrt(inDim)), B: B.map((v) => v * 0.01) };
}

function adapterSet(adapterIndex: number, layerCount: number): Record<string, LoraModule> {
  const mods: Record<string, LoraModule> = {};
  let stream = 1000 * adapterIndex;
  for (let l = 0; l < layerCount; l++) {
    for (const [proj, [out, inDim]] of Object.entries(SHAPES)) {
      const group = ['gate_proj', 'up_proj', 'down_proj'].includes(proj) ? 'mlp' : 'self_attn';
      stream += 2;
      mods[`model.layers.${l}.${group}.${proj}`] = makeModule(out, inDim, stream, 2); // alpha = 2r
    }
  }
  return mods;
}

const dir = mkdtempSync(join(tmpdir(), 'lowrank-merge-bench-'));
try {
  const inputs: MergeInput[] = Array.from({ length: n }, (_, i) => ({ modules: adapterSet(i, layers) }));
  const weights = Array.from({ length: n }, (_, i) => 1 / (i + 1));
  const adapters = inputs.map((input, i) => ({
    name: `a${i}`,
    r: rank,
    alpha: 2 * rank,
    modules: Object.fromEntries(
      Object.entries(input.modules).map(([name, m]) => {
        const save = (t: string, x: Float32Array, shape: number[]) => {
          const file = `a${i}.${name}.${t}.f32`;
          writeFileSync(join(dir, file), new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
          return { file, shape, dtype: 'f32' };
        };
        return [name, { A: save('A', m.A, [m.r, m.in]), B: save('B', m.B, [m.out, m.r]) }];
      }),
    ),
  }));
  writeFileSync(
    join(dir, 'bench.json'),
    JSON.stringify({
      layers,
      shapes: SHAPES,
      adapters,
      weights,
      combinations,
      density,
      spectra_layers: spectraLayers,
      reduce_rank: Math.max(1, rank >> 1),
      device: values['torch-device'],
    }),
  );

  const ours: Record<string, number> = {};
  for (const c of combinations) {
    const t0 = performance.now();
    await mergeAdapters(inputs, {
      combination: c,
      weights,
      density: ['cat', 'linear', 'svd'].includes(c) ? undefined : density,
      seed: 1,
      svdMethod,
    });
    ours[c] = (performance.now() - t0) / 1000;
  }
  const first = inputs[0]?.modules ?? {};
  const spectraNames = Object.keys(first).filter((k) => Number(k.split('.')[2]) < spectraLayers);
  let t0 = performance.now();
  for (const k of spectraNames) {
    const m = first[k];
    if (m) spectra(m);
  }
  const oursSpectra = (performance.now() - t0) / 1000;
  const reduced = Object.fromEntries(spectraNames.map((k) => [k, first[k] as LoraModule]));
  t0 = performance.now();
  reduceRank(reduced, { policy: { fixed: Math.max(1, rank >> 1) } });
  const oursReduce = (performance.now() - t0) / 1000;
  const all = adapterSet(0, allLayers);
  t0 = performance.now();
  for (const m of Object.values(all)) spectra(m);
  const oursAll = (performance.now() - t0) / 1000;
  const oursPeak = peakRssMb();

  const r = spawnSync(py, [join(import.meta.dirname, 'python', 'peft_merge_bench.py'), dir], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`peft_merge_bench.py failed:\n${r.stderr}`);
  const peft = JSON.parse(r.stdout) as {
    merge_s: Record<string, number>;
    spectra_s: number;
    reduce_s: number;
    peak_rss_mb: number;
    threads: number;
    device?: string;
    peak_device_mb?: number;
  };

  const fmt = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(3).padStart(9));
  console.log(`machine: ${cpus()[0]?.model ?? '?'} x ${cpus().length}; OpenBLAS threads ${blasThreads()}; torch threads ${peft.threads}`);
  const backend = backendInfo();
  console.log(
    `our backend: ${backend.backend}${backend.device ? ` (${backend.device})` : ''}; PEFT on ${peft.device ?? 'cpu'}${peft.peak_device_mb ? `, peak device ${Math.round(peft.peak_device_mb)} MB` : ''}`,
  );
  console.log(
    `merge of ${n} adapters, r=${rank}, ${layers} layer(s) x 7 modules of Llama-2-7B shape (${layers * 7} modules); dense svd: ${svdMethod}`,
  );
  console.log('combination          ours (s)  PEFT (s)  PEFT/ours');
  for (const c of combinations) {
    const a = ours[c];
    const b = peft.merge_s[c];
    console.log(`${c.padEnd(18)} ${fmt(a)} ${fmt(b)} ${a && b ? (b / a).toFixed(1).padStart(9) : '-'}`);
  }
  console.log(
    `spectra, ${spectraNames.length} modules: ours ${oursSpectra.toFixed(3)} s (factored), dense svdvals ${peft.spectra_s.toFixed(3)} s`,
  );
  console.log(`spectra, all ${Object.keys(all).length} modules of ${allLayers} layers: ours ${oursAll.toFixed(3)} s`);
  console.log(
    `rank reduction r=${rank} -> ${Math.max(1, rank >> 1)}, ${spectraNames.length} modules: ours ${oursReduce.toFixed(3)} s (factored), torch.svd_lowrank of the dense delta ${peft.reduce_s.toFixed(3)} s, ratio ${(peft.reduce_s / oursReduce).toFixed(1)}x`,
  );
  console.log(
    `peak RSS: ours ${oursPeak.toFixed(0)} MB (this process, inputs included); PEFT ${peft.peak_rss_mb.toFixed(0)} MB (python process)`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
