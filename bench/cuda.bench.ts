/**
 * The CUDA backend vs PyTorch + PEFT on the GPU, 1B-class Llama shape (Llama-3.2-1B:
 * hidden 2048, intermediate 8192, 32 heads, 8 KV heads, 16 layers), random weights.
 *
 *  1. LoRA hot path: forward + backward of the seven adapted projections of one layer
 *     (bf16 W, rank r, given output gradients), ours device-resident
 *     (lrk_cuda_bench_lora_layer) vs PEFT's LoRA Linear layers: ms, tokens/s, memory held.
 *  2. Full training step of PyTorch + PEFT (the baseline): tokens/s and peak memory. Ours
 *     has no figure yet: the training engine still runs on the CPU (docs/cuda.md).
 *
 *   node bench/cuda.bench.ts [--tokens 4096] [--hidden 2048] [--intermediate 8192] [--heads 32]
 *       [--kv-heads 8] [--head-dim 64] [--rank 16] [--iters 20] [--layers 16] [--vocab 128256]
 *       [--rows 4] [--seq 1024] [--steps 5]
 *
 * Without a usable GPU it prints why and exits 0 (nothing measured). Needs LOWRANK_PYTHON
 * (scripts/lib/pyenv.sh) with a CUDA build of torch, and the addon + liblowrank_cuda.so.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { backendInfo } from '../worker/src/native/backend.ts';
import { loadNative } from '../worker/src/native/load.ts';

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
    }).map(([k, d]) => [k, { type: 'string' as const, default: d }]),
  ),
});
const num = (k: string) => Number(values[k]);

const info = backendInfo();
if (info.backend !== 'cuda') {
  console.log(JSON.stringify({ skipped: `no usable CUDA device: ${info.reason ?? 'LOWRANK_BACKEND=cpu'}` }));
  process.exit(0);
}
const py = process.env.LOWRANK_PYTHON;
if (!py) throw new Error('LOWRANK_PYTHON is not set: source scripts/lib/pyenv.sh and run lowrank_ensure_pyenv');

function peft(mode: 'layer' | 'model', args: Record<string, number>): Record<string, number | string> {
  const r = spawnSync(py as string, [join(import.meta.dirname, 'python', 'peft_cuda_bench.py'), mode, JSON.stringify(args)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`peft_cuda_bench.py ${mode} exited ${r.status}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
}

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
const mib = (b: number) => Math.round(b / 2 ** 20);
console.log(`device: ${info.device}; torch ${theirs.torch} on ${theirs.device}`);
console.log(`LoRA layer fwd+bwd, ${shape.tokens} tokens, r ${shape.rank}, bf16 W:`);
console.log(
  `  ours ${ours.msPerIter.toFixed(2)} ms (${Math.round(shape.tokens / (ours.msPerIter / 1000))} tokens/s), ${mib(ours.bytesHeld)} MiB`,
);
console.log(
  `  PEFT ${theirsMs.toFixed(2)} ms (${Math.round(shape.tokens / (theirsMs / 1000))} tokens/s), ${mib(Number(theirs.bytesHeld))} MiB`,
);
console.log(`  ratio (PEFT time / ours): ${(theirsMs / ours.msPerIter).toFixed(2)}`);
const model = peft('model', {
  vocab: num('vocab'),
  hidden: num('hidden'),
  intermediate: num('intermediate'),
  layers: num('layers'),
  heads: num('heads'),
  kvHeads: num('kv-heads'),
  rank: num('rank'),
  rows: num('rows'),
  seq: num('seq'),
  steps: num('steps'),
});
console.log(`full training step, PyTorch + PEFT (baseline), ${num('rows')}×${num('seq')} tokens:`);
console.log(
  `  ${Math.round(Number(model.tokensPerSecond))} tokens/s, peak ${mib(Number(model.peakBytes))} MiB; ours: n/a (engine on the CPU)`,
);
