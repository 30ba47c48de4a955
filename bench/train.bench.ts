/**
 * Training-step throughput: the native engine vs PyTorch + PEFT on the CPU, same random
 * Llama-shaped model (default: SmolLM-135M's shape, fp32), same token batch, same LoRA
 * (rank, alpha, targets), same optimizer (AdamW + clipping) and thread count, in the same
 * run, their steps alternating so both see the same machine load. Prints wall-clock
 * tokens/s and CPU seconds per step for each side, their ratios, peak RSS, and the first
 * step's loss on both sides (equal: B = 0 at init, so both see the base model).
 *
 *   node bench/train.bench.ts [--layers 30] [--hidden 576] [--intermediate 1536] [--heads 9]
 *       [--kv-heads 3] [--vocab 49152] [--rows 4] [--seq 128] [--rank 16] [--steps 3]
 *       [--warmup 1] [--threads <cores>] [--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]
 *
 * Needs LOWRANK_PYTHON (scripts/lib/pyenv.sh) and the addon (scripts/build-native).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { initLora, PROJECTIONS, type Projection, setTrainThreads, TrainModel } from '../worker/src/native/train.ts';

const { values } = parseArgs({
  options: {
    layers: { type: 'string', default: '30' },
    hidden: { type: 'string', default: '576' },
    intermediate: { type: 'string', default: '1536' },
    heads: { type: 'string', default: '9' },
    'kv-heads': { type: 'string', default: '3' },
    vocab: { type: 'string', default: '49152' },
    rows: { type: 'string', default: '4' },
    seq: { type: 'string', default: '128' },
    rank: { type: 'string', default: '16' },
    steps: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    threads: { type: 'string', default: String(cpus().length) },
    targets: { type: 'string', default: PROJECTIONS.join(',') },
  },
});
const num = (k: keyof typeof values) => Number(values[k]);
const py = process.env.LOWRANK_PYTHON;
if (!py) throw new Error('LOWRANK_PYTHON is not set: source scripts/lib/pyenv.sh and run lowrank_ensure_pyenv');
const isProjection = (t: string): t is Projection => (PROJECTIONS as readonly string[]).includes(t);
const targets = String(values.targets).split(',').filter(isProjection);
const threads = num('threads');
const rows = num('rows');
const seq = num('seq');
const rank = num('rank');

const config = {
  vocab_size: num('vocab'),
  hidden_size: num('hidden'),
  intermediate_size: num('intermediate'),
  num_hidden_layers: num('layers'),
  num_attention_heads: num('heads'),
  num_key_value_heads: num('kv-heads'),
  max_position_embeddings: Math.max(2048, seq),
  tie_word_embeddings: true,
  rope_theta: 100000,
};

/** Peak resident set of this process so far (Linux VmHWM), MB. */
const peakRssMb = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;

function python(...args: string[]): string {
  const r = spawnSync(py as string, [join(import.meta.dirname, 'python', 'peft_train_bench.py'), ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  if (r.status !== 0) throw new Error(`peft_train_bench.py ${args[0]} failed:\n${r.stderr}`);
  return r.stdout.trim().split('\n').at(-1) ?? '';
}

// The random model is cached by its shape (writing 500 MB of safetensors takes a while).
const key = Object.values(config).join('-');
const dir = join(tmpdir(), 'lowrank-train-bench', key);
const modelDir = join(dir, 'model');
if (!existsSync(join(modelDir, 'config.json'))) {
  mkdirSync(dir, { recursive: true });
  python('make', modelDir, JSON.stringify(config));
}

// Tokens: an LCG over the vocabulary; the first 16 positions of each row are a masked prompt.
let x = 42;
const tokens: number[][] = [];
for (let r = 0; r < rows; r++) {
  tokens.push(
    Array.from({ length: seq }, () => {
      x = (x * 1103515245 + 12345) % 2147483648;
      return x % config.vocab_size;
    }),
  );
}
const labels = tokens.map((row) => row.map((t, j) => (j < Math.min(16, seq - 1) ? -100 : t)));
const optimizer = { lr: 1e-4, weightDecay: 0.01, maxGradNorm: 1.0 };
const steps = num('steps');
const warmup = num('warmup');

// The peer runs in its own process, stepped line by line so that its steps and ours
// alternate and see the same load (the machine's cores are shared with other work).
writeFileSync(
  join(dir, 'bench.json'),
  JSON.stringify({ model: modelDir, lora: { r: rank, alpha: 2 * rank, targets }, tokens, labels, optimizer, threads }),
);
const child = spawn(py, [join(import.meta.dirname, 'python', 'peft_train_bench.py'), 'serve', dir], { stdio: ['pipe', 'pipe', 'inherit'] });
const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
const ask = async (cmd: string): Promise<Record<string, number | string | boolean>> => {
  if (cmd) child.stdin.write(`${cmd}\n`);
  const next = await lines.next();
  if (next.done) throw new Error('peft_train_bench.py exited early');
  return JSON.parse(next.value) as Record<string, number | string | boolean>;
};
await ask(''); // ready

setTrainThreads(threads);
const model = await TrainModel.load(modelDir);
model.setAdapter(initLora(model.config, { r: rank, alpha: 2 * rank, targets, seed: 1 }));
const batch = { tokens: Int32Array.from(tokens.flat()), labels: Int32Array.from(labels.flat()), rows, seq };
const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const ours = { wall: [] as number[], cpu: [] as number[], losses: [] as number[] };
const peer = { wall: [] as number[], cpu: [] as number[], losses: [] as number[] };
for (let s = 0; s < warmup + steps; s++) {
  const p = await ask('step');
  const t0 = performance.now();
  const c0 = cpuNow();
  const r = await model.trainStep([batch], optimizer);
  const wall = (performance.now() - t0) / 1000;
  const cpu = cpuNow() - c0;
  ours.losses.push(r.loss);
  peer.losses.push(Number(p.loss));
  if (s < warmup) continue;
  ours.wall.push(wall);
  ours.cpu.push(cpu);
  peer.wall.push(Number(p.seconds));
  peer.cpu.push(Number(p.cpuSeconds));
}
const peerInfo = await ask('quit');
const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)] ?? Number.NaN;
const tokensPerStep = rows * seq;
const [ow, pw, oc, pc] = [median(ours.wall), median(peer.wall), median(ours.cpu), median(peer.cpu)];

const shape = `${config.num_hidden_layers} layers, hidden ${config.hidden_size}, ffn ${config.intermediate_size}, heads ${config.num_attention_heads}/${config.num_key_value_heads}, vocab ${config.vocab_size}`;
console.log(`model: ${shape}, ${(model.config.numParams / 1e6).toFixed(1)}M params (fp32, tied embeddings)`);
console.log(`batch: ${rows} x ${seq} tokens; LoRA r=${rank} alpha=${2 * rank} on ${targets.join(',')}; AdamW + clip 1.0`);
console.log(
  `threads: ${threads} per side (torch ${peerInfo.torch}: ${peerInfo.threads}); median of ${steps} alternating steps after ${warmup} warmup`,
);
console.log(
  `load average at the end: ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')} (cores: ${cpus().length})`,
);
console.log(`first-step loss: ours ${ours.losses[0]?.toFixed(6)}, PEFT ${peer.losses[0]?.toFixed(6)}`);
console.log('| side | s/step | tokens/s | CPU s/step | peak RSS (MB) |');
console.log('| --- | ---: | ---: | ---: | ---: |');
console.log(`| ours | ${ow.toFixed(3)} | ${(tokensPerStep / ow).toFixed(0)} | ${oc.toFixed(2)} | ${peakRssMb().toFixed(0)} |`);
console.log(
  `| PyTorch + PEFT | ${pw.toFixed(3)} | ${(tokensPerStep / pw).toFixed(0)} | ${pc.toFixed(2)} | ${Number(peerInfo.peakRssMb).toFixed(0)} |`,
);
console.log(`ratio (ours / PyTorch+PEFT tokens/s): ${(pw / ow).toFixed(2)}x; CPU time ratio (PEFT / ours): ${(pc / oc).toFixed(2)}x`);
