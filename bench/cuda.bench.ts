/**
 * The CUDA backend vs PyTorch + PEFT on the GPU, 1B-class Llama shape (Llama-3.2-1B:
 * hidden 2048, intermediate 8192, 32 heads, 8 KV heads, 16 layers, tied embeddings),
 * random weights.
 *
 *  (printed second) 1. LoRA hot path: forward + backward of the seven adapted projections of one layer
 *     (bf16 W, rank r, given output gradients), ours device-resident
 *     (lrk_cuda_bench_lora_layer) vs PEFT's LoRA Linear layers: ms, tokens/s, memory held.
 *  (printed first) 2. Full training step (forward, loss, backward, AdamW) of the same random bf16 model
 *     (peft_cuda_bench.py save writes it; both sides load it), LoRA r on all seven
 *     projections, rows × seq tokens: ours on the device engine (TrainModel.useDevice, the
 *     job's path) vs PyTorch + PEFT: tokens/s, peak device memory, ratio.
 *
 *   node bench/cuda.bench.ts [--tokens 4096] [--hidden 2048] [--intermediate 8192] [--heads 32]
 *       [--kv-heads 8] [--head-dim 64] [--rank 16] [--iters 20] [--layers 16] [--vocab 128256]
 *       [--rows 4] [--seq 1024] [--steps 5] [--precision bf16|f32] [--recompute]
 *       [--torch-device cuda|cpu] [--only layer|model]
 *
 * Without a usable CUDA backend it prints why and exits 0 (nothing measured). Needs
 * LOWRANK_PYTHON (scripts/lib/pyenv.sh, or the GPU image's python3) with torch, peft and
 * transformers, and the addon + liblowrank_cuda.so. cuBLAS: LOWRANK_CUBLAS_LIBRARY, else
 * torch's nvidia/cublas wheel when python finds one. `--torch-device cpu` with tiny shapes
 * is a dry run of the script on the emulated backend (no figures worth recording).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { backendInfo } from '../worker/src/native/backend.ts';
import { philox } from '../worker/src/native/linalg.ts';
import { loadNative } from '../worker/src/native/load.ts';
import { type ComputePrecision, initLora, PROJECTIONS, TrainModel } from '../worker/src/native/train.ts';

const { values } = parseArgs({
  options: Object.fromEntries(
    Object.entries({
      tokens: '4096',
      hidden: '2048',
      intermediate: '8192',
      heads: '32',
      'kv-heads': '8',
      'head-dim': '64',
      rank: '16',
      iters: '20',
      layers: '16',
      vocab: '128256',
      rows: '4',
      seq: '1024',
      steps: '5',
      precision: 'bf16',
      'torch-device': 'cuda',
      only: '',
    }).map(([k, d]) => [k, { type: 'string' as const, default: d }]),
  ),
  recompute: { type: 'boolean', default: false },
});
const num = (k: string) => Number(values[k]);
const precision = values.precision as ComputePrecision;
if (precision !== 'bf16' && precision !== 'f32') throw new Error(`--precision must be bf16 or f32, got ${precision}`);
const torchDevice = String(values['torch-device']);
const py = process.env.LOWRANK_PYTHON;
if (!py) throw new Error('LOWRANK_PYTHON is not set: source scripts/lib/pyenv.sh and run lowrank_ensure_pyenv');

// cuBLAS: torch's own wheel when none is named (read before the backend loads).
if (!process.env.LOWRANK_CUBLAS_LIBRARY && torchDevice === 'cuda') {
  const r = spawnSync(py, ['-c', 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))'], {
    encoding: 'utf8',
  });
  const dir = r.status === 0 ? r.stdout.trim() : '';
  const lib = ['libcublas.so.13', 'libcublas.so.12'].map((f) => join(dir, f)).find((f) => dir && existsSync(f));
  if (lib) process.env.LOWRANK_CUBLAS_LIBRARY = lib;
}

const info = backendInfo();
if (info.backend !== 'cuda') {
  console.log(JSON.stringify({ skipped: `no usable CUDA device: ${info.reason ?? 'LOWRANK_BACKEND=cpu'}` }));
  process.exit(0);
}

function peft(mode: 'layer' | 'save' | 'model', args: Record<string, number | string>): Record<string, number | string> {
  const a = JSON.stringify({ ...args, device: torchDevice });
  const r = spawnSync(py as string, [join(import.meta.dirname, 'python', 'peft_cuda_bench.py'), mode, a], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`peft_cuda_bench.py ${mode} exited ${r.status}`);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
  if (out.skipped) {
    console.log(JSON.stringify({ skipped: `PyTorch: ${out.skipped}` }));
    process.exit(0);
  }
  return out;
}

const mib = (b: number) => Math.round(b / 2 ** 20);
const rate = (tokens: number, ms: number) => Math.round(tokens / (ms / 1000));
console.log(`device: ${info.device}; GEMMs: ${info.gemm ?? 'unknown'}; torch on ${torchDevice}`);

// The full step first: deviceBytesPeak, read right after it, is then the step's own peak.
if (values.only !== 'layer') {
  const rows = num('rows');
  const seq = num('seq');
  const steps = num('steps');
  const model = {
    vocab: num('vocab'),
    hidden: num('hidden'),
    intermediate: num('intermediate'),
    layers: num('layers'),
    heads: num('heads'),
    kvHeads: num('kv-heads'),
    headDim: num('head-dim'),
    rank: num('rank'),
    rows,
    seq,
    steps,
  };
  const dir = mkdtempSync(join(tmpdir(), 'lowrank-cuda-bench-'));
  try {
    peft('save', { ...model, dir });
    const ours = await oursTraining(dir, rows, seq, steps);
    const theirs = peft('model', { ...model, dir });
    const theirsRate = Number(theirs.tokensPerSecond);
    console.log(`torch ${theirs.torch} on ${theirs.device}`);
    console.log(`full training step, ${rows}×${seq} tokens, LoRA r ${num('rank')} on q/k/v/o/gate/up/down, AdamW:`);
    console.log(
      `  ours (${ours.precision}${values.recompute ? ', recompute' : ''}) ${Math.round(ours.tokensPerSecond)} tokens/s (${ours.msPerStep.toFixed(1)} ms/step), peak ${mib(ours.peakBytes)} MiB`,
    );
    console.log(
      `  PEFT (bf16) ${Math.round(theirsRate)} tokens/s (${Number(theirs.msPerStep).toFixed(1)} ms/step), peak ${mib(Number(theirs.peakBytes))} MiB`,
    );
    console.log(
      `  ratio (ours tokens/s / PEFT): ${(ours.tokensPerSecond / theirsRate).toFixed(2)}; memory (ours / PEFT): ${Number(theirs.peakBytes) > 0 ? (ours.peakBytes / Number(theirs.peakBytes)).toFixed(2) : 'n/a (torch on the CPU)'}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.only !== 'model') {
  const shape = {
    tokens: num('tokens'),
    hidden: num('hidden'),
    intermediate: num('intermediate'),
    qDim: num('heads') * num('head-dim'),
    kvDim: num('kv-heads') * num('head-dim'),
    rank: num('rank'),
    iters: num('iters'),
  };
  const bench = loadNative().cudaBenchLoraLayer as (a: typeof shape) => { msPerIter: number; bytesHeld: number };
  const ours = bench(shape);
  const theirs = peft('layer', shape);
  const theirsMs = Number(theirs.msPerIter);
  console.log(`LoRA layer fwd+bwd, ${shape.tokens} tokens, r ${shape.rank}, bf16 W:`);
  console.log(`  ours ${ours.msPerIter.toFixed(2)} ms (${rate(shape.tokens, ours.msPerIter)} tokens/s), ${mib(ours.bytesHeld)} MiB`);
  console.log(`  PEFT ${theirsMs.toFixed(2)} ms (${rate(shape.tokens, theirsMs)} tokens/s), ${mib(Number(theirs.bytesHeld))} MiB`);
  console.log(`  ratio (PEFT time / ours): ${(theirsMs / ours.msPerIter).toFixed(2)}`);
}

/** Our training step on the device engine, as a train job runs it: load, adapter, useDevice, timed steps. */
async function oursTraining(dir: string, rows: number, seq: number, steps: number) {
  const m = await TrainModel.load(dir);
  m.setAdapter(initLora(m.config, { r: num('rank'), alpha: 2 * num('rank'), targets: PROJECTIONS, seed: 0 }));
  m.setRecompute(Boolean(values.recompute));
  const choice = await m.useDevice(precision);
  if (choice.engine !== 'cuda') throw new Error(`the device engine refused the benchmark's adapter: ${choice.reason}`);
  const u = philox(0, 1, rows * seq, 'uniform') as Float32Array;
  const tokens = Int32Array.from(u, (x) => Math.floor(x * m.config.vocabSize));
  const batch = [{ tokens, labels: tokens, rows, seq }];
  const opt = { lr: 1e-4 };
  await m.trainStep(batch, opt); // allocations and the first cuBLAS calls
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await m.trainStep(batch, opt);
  const msPerStep = (performance.now() - t0) / steps;
  return {
    tokensPerSecond: (rows * seq) / (msPerStep / 1000),
    msPerStep,
    peakBytes: backendInfo().deviceBytesPeak ?? 0,
    precision: choice.precision,
  };
}
