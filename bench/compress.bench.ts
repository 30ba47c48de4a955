/**
 * Delta-space merges, extraction, quantization, EoRA and safetensors loading, ours vs the
 * Python peers on the same inputs in the same run (bench/python/compress_bench.py):
 *   mergekit 0.1.5 task_arithmetic / ties / dare_ties on the dense deltas s·B·A of N
 *     adapters of one Llama-2-7B layer, then re-factoring at rank r by randomized SVD
 *     (ours: p = 10, niter = 4; peer: torch.svd_lowrank(q = r + 10, niter = 4));
 *   model_stock: ours by factored cosines, mergekit on the dense deltas;
 *   extract: W_ft − W_base from two safetensors files to a rank-r LoRA (same SVD settings);
 *   safetensors: open (ours: mmap + full header validation; peer: load_file, which maps
 *     lazily) and load to owned f32 arrays (ours: + tensorToFloat32; peer: + clone()/float());
 *   int8 row-wise quantization of the adapter factors: ours vs torch;
 *   EoRA on one module: ours vs the PyTorch replica of NVlabs/EoRA (fp64 eigh).
 * Prints seconds, PEER/ours and peak RSS of both processes.
 *
 *   node bench/compress.bench.ts [--n 3] [--rank 16] [--density 0.5] [--eora-dim 2048] [--tokens 4096]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { eora, quantizeInt8Rows } from '../worker/src/native/compress-base.ts';
import { factorDense, legoMerge, mergeDeltas, modelStock } from '../worker/src/native/delta.ts';
import { blasThreads, gemm, type LoraModule, type Matrix, philox } from '../worker/src/native/linalg.ts';
import { readSafetensors, tensorToFloat32, type WritableTensor, writeSafetensors } from '../worker/src/native/safetensors.ts';

const SHAPES: Record<string, [number, number]> = {
  'self_attn.q_proj': [4096, 4096],
  'self_attn.k_proj': [4096, 4096],
  'self_attn.v_proj': [4096, 4096],
  'self_attn.o_proj': [4096, 4096],
  'mlp.gate_proj': [11008, 4096],
  'mlp.up_proj': [11008, 4096],
  'mlp.down_proj': [4096, 11008],
};
const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '3' },
    rank: { type: 'string', default: '16' },
    density: { type: 'string', default: '0.5' },
    'eora-dim': { type: 'string', default: '2048' },
    tokens: { type: 'string', default: '4096' },
  },
});
const n = Number(values.n);
const rank = Number(values.rank);
const density = Number(values.density);
const eoraDim = Number(values['eora-dim']);
const tokens = Number(values.tokens);
const py = process.env.LOWRANK_PYTHON;
if (!py) throw new Error('LOWRANK_PYTHON is not set: run through scripts/bench (it sources scripts/lib/pyenv.sh)');
const peakRssMb = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;
const normal = (stream: number, len: number, scale: number) => (philox(5, stream, len, 'normal') as Float32Array).map((v) => v * scale);
const time = <T>(fn: () => T): [T, number] => {
  const t0 = performance.now();
  const r = fn();
  return [r, (performance.now() - t0) / 1000];
};
const dense = (m: LoraModule): Matrix =>
  gemm({ rows: m.out, cols: m.r, data: m.B }, { rows: m.r, cols: m.in, data: m.A }, { alpha: m.scale });

const dir = mkdtempSync(join(tmpdir(), 'lowrank-compress-bench-'));
try {
  const names = Object.keys(SHAPES);
  const adapters: Record<string, LoraModule>[] = [];
  const files: Record<string, { A: string; B: string }>[] = [];
  let stream = 1;
  // Correlated adapters (a shared component plus noise), so Model Stock's cosines are positive.
  const common = names.map((name) => {
    const [out, inDim] = SHAPES[name] as [number, number];
    return { A: normal(stream++, rank * inDim, 1 / Math.sqrt(inDim)), B: normal(stream++, out * rank, 0.01) };
  });
  for (let i = 0; i < n; i++) {
    const mods: Record<string, LoraModule> = {};
    const f: Record<string, { A: string; B: string }> = {};
    names.forEach((name, j) => {
      const [out, inDim] = SHAPES[name] as [number, number];
      const c = common[j] as { A: Float32Array; B: Float32Array };
      const A = normal(stream++, rank * inDim, 0.5 / Math.sqrt(inDim)).map((v, k) => v + (c.A[k] as number));
      const B = normal(stream++, out * rank, 0.005).map((v, k) => v + (c.B[k] as number));
      mods[name] = { r: rank, in: inDim, out, A, B, scale: 2 };
      f[name] = { A: `a${i}.${name}.A.f32`, B: `a${i}.${name}.B.f32` };
      writeFileSync(join(dir, f[name].A), new Uint8Array(A.buffer));
      writeFileSync(join(dir, f[name].B), new Uint8Array(B.buffer));
    });
    adapters.push(mods);
    files.push(f);
  }
  const weights = Array.from({ length: n }, (_, i) => 1 / (i + 1));

  // Base and fine-tune files for extract and the load benchmark (one 7B layer, F32 and BF16).
  const base: Record<string, WritableTensor> = {};
  const ft: Record<string, WritableTensor> = {};
  const baseBf16: Record<string, WritableTensor> = {};
  names.forEach((name) => {
    const [out, inDim] = SHAPES[name] as [number, number];
    const w = normal(stream++, out * inDim, 0.02);
    const d = dense(adapters[0]?.[name] as LoraModule).data;
    base[`model.layers.0.${name}.weight`] = { dtype: 'F32', shape: [out, inDim], data: w };
    ft[`model.layers.0.${name}.weight`] = { dtype: 'F32', shape: [out, inDim], data: w.map((v, k) => v + (d[k] as number)) };
    baseBf16[`model.layers.0.${name}.weight`] = { dtype: 'BF16', shape: [out, inDim], data: w };
  });
  writeSafetensors(join(dir, 'base.safetensors'), base, { format: 'pt' });
  writeSafetensors(join(dir, 'ft.safetensors'), ft, { format: 'pt' });
  writeSafetensors(join(dir, 'base-bf16.safetensors'), baseBf16, { format: 'pt' });
  for (const k of Object.keys(base)) delete base[k];
  for (const k of Object.keys(ft)) delete ft[k];
  for (const k of Object.keys(baseBf16)) delete baseBf16[k];
  const eoraW = normal(stream++, eoraDim * eoraDim, 0.02);
  const eoraX = normal(stream++, tokens * eoraDim, 1);
  writeFileSync(join(dir, 'eora_w.f32'), new Uint8Array(eoraW.buffer));
  writeFileSync(join(dir, 'eora_x.f32'), new Uint8Array(eoraX.buffer));
  writeFileSync(join(dir, 'bench.json'), JSON.stringify({ shapes: SHAPES, files, weights, rank, density, eora_dim: eoraDim, tokens }));

  const ours: Record<string, number> = {};
  for (const method of ['task_arithmetic', 'ties', 'dare_ties'] as const) {
    ours[`mergekit ${method}`] = time(() => {
      for (const name of names) {
        const deltas = adapters.map((a) => dense(a[name] as LoraModule));
        const mix = mergeDeltas(deltas, { method, weights, density, seed: 1, module: name });
        factorDense(mix, { rank, randomized: true, seed: 1, purpose: `rsvd:${name}` });
      }
    })[1];
  }
  ours.model_stock = time(() => {
    for (const name of names) modelStock(adapters.map((a) => a[name] as LoraModule));
  })[1];
  ours['lego (no peer)'] = time(() => {
    for (const name of names)
      legoMerge(
        adapters.map((a) => a[name] as LoraModule),
        weights,
        { k: rank, seed: 1, module: name },
      );
  })[1];
  ours.extract = time(() => {
    const b = readSafetensors(join(dir, 'base.safetensors'));
    const f = readSafetensors(join(dir, 'ft.safetensors'));
    for (const [key, t] of Object.entries(f.tensors)) {
      const wf = tensorToFloat32(t);
      const wb = tensorToFloat32(b.tensors[key] as typeof t);
      for (let k = 0; k < wf.length; k++) wf[k] = (wf[k] as number) - (wb[k] as number);
      factorDense({ rows: t.shape[0] as number, cols: t.shape[1] as number, data: wf }, { rank, randomized: true, seed: 1, purpose: key });
    }
  })[1];
  ours['safetensors open (F32)'] = time(() => Object.keys(readSafetensors(join(dir, 'base.safetensors')).tensors).length)[1];
  for (const [label, file] of [
    ['safetensors load F32 -> owned f32', 'base.safetensors'],
    ['safetensors load BF16 -> f32', 'base-bf16.safetensors'],
  ] as const) {
    ours[label] = time(() => {
      const s = readSafetensors(join(dir, file));
      let sum = 0;
      for (const t of Object.values(s.tensors)) sum += tensorToFloat32(t).length;
      return sum;
    })[1];
  }
  ours['int8 quantize (factors)'] = time(() => {
    for (const a of adapters)
      for (const m of Object.values(a)) {
        quantizeInt8Rows({ rows: m.r, cols: m.in, data: m.A });
        quantizeInt8Rows({ rows: m.out, cols: m.r, data: m.B });
      }
  })[1];
  const hat = eoraW.map((v) => Math.round(v / 0.01) * 0.01);
  ours[`EoRA ${eoraDim}², ${tokens} tokens`] = time(() =>
    eora(
      { rows: eoraDim, cols: eoraDim, data: eoraW.map((v, k) => v - (hat[k] as number)) },
      { rows: tokens, cols: eoraDim, data: eoraX },
      rank,
    ),
  )[1];
  const oursPeak = peakRssMb();

  const r = spawnSync(py, [join(import.meta.dirname, 'python', 'compress_bench.py'), dir], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    env: { ...process.env, PYTHONPATH: process.env.LOWRANK_MERGEKIT_PATH ?? '' },
  });
  if (r.status !== 0) throw new Error(`compress_bench.py failed:\n${r.stderr}`);
  const peer = JSON.parse(r.stdout) as {
    seconds: Record<string, number>;
    peak_rss_mb: number;
    threads: number;
    versions: Record<string, string>;
  };
  console.log(`machine: ${cpus()[0]?.model ?? '?'} x ${cpus().length}; OpenBLAS threads ${blasThreads()}; torch threads ${peer.threads}`);
  console.log(
    `peers: ${Object.entries(peer.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  console.log(`${n} adapters, r=${rank}, one Llama-2-7B layer (7 modules); density ${density}`);
  console.log('step                                ours (s)   peer (s)  peer/ours');
  for (const [k, a] of Object.entries(ours)) {
    const b = peer.seconds[k];
    console.log(
      `${k.padEnd(34)} ${a.toFixed(3).padStart(9)} ${b === undefined ? '        -' : b.toFixed(3).padStart(9)} ${b === undefined ? '        -' : (b / a).toFixed(1).padStart(9)}`,
    );
  }
  console.log(
    `peak RSS: ours ${oursPeak.toFixed(0)} MB (Node process, inputs included); peer ${peer.peak_rss_mb.toFixed(0)} MB (python process)`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
