/**
 * The randomized SVDs of merges and compressions on the CUDA backend (the dense operator's
 * products on the device, src/cuda/dense_matrix.cu + src/addon/device_linalg.cc) against
 * the CPU's: support/device-svd-cases.ts run in two child processes, LOWRANK_BACKEND=cpu and
 * the emulated CUDA library (as backend-emulated.test.ts; LOWRANK_DEVICE_TESTS=gpu: the
 * real library and driver, as scripts/gpu-check runs it). Tolerances (METHODS §8.1): σ within
 * 1e-5·σ1, the rank-k products U diag(σ) Vᵀ and B A rel ≤ 1e-5 (gaps of 0.3·σ_i at the cuts).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { rel } from './support/numeric.ts';

const exec = promisify(execFile);
const native = join(import.meta.dirname, '..', 'native');
const out = join(native, 'build', 'cuda');
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-device-svd-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const cases = join(import.meta.dirname, 'support', 'device-svd-cases.ts');

interface Result {
  backend: string;
  peak: number;
  m: number[];
  svd: { u: number[]; s: number[]; vt: number[] };
  factor: { A: number[]; B: number[]; sigma: number[] };
}

async function run(env: NodeJS.ProcessEnv): Promise<Result> {
  const r = await exec(process.execPath, [cases], { env: { ...process.env, ...env }, maxBuffer: 1 << 24 });
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
}

/** [rows, k] · diag(s) · [k, cols], row-major. */
function product(u: number[], s: number[] | null, vt: number[], rows: number, k: number, cols: number): Float64Array {
  const y = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let p = 0; p < k; p++) {
      const a = (u[i * k + p] as number) * (s ? (s[p] as number) : 1);
      for (let j = 0; j < cols; j++) y[i * cols + j] = (y[i * cols + j] as number) + a * (vt[p * cols + j] as number);
    }
  return y;
}

test('randomized SVD and randomized factorDense: the CUDA backend (emulated) equals the CPU within tolerance', {
  timeout: 300_000,
}, async () => {
  if (process.env.LOWRANK_DEVICE_TESTS !== 'gpu') {
    await exec('make', ['--no-print-directory', '-C', join(native, 'src', 'cuda'), 'emu', `OUT=${out}`, '-j', '2']);
    // FAKE: an empty libcuda.so.1 stands in for the NVIDIA driver, so the addon goes on to load the library.
    writeFileSync(join(tmp, 'fake.c'), 'int lowrank_fake_nvidia_driver;\n');
    await exec('cc', ['-shared', '-fPIC', '-o', join(tmp, 'libcuda.so.1'), join(tmp, 'fake.c')]);
  }
  const cpu = await run({ LOWRANK_BACKEND: 'cpu' });
  const gpu = process.env.LOWRANK_DEVICE_TESTS === 'gpu';
  const dev = await run(
    gpu
      ? { LOWRANK_BACKEND: 'cuda' }
      : {
          LOWRANK_BACKEND: 'cuda',
          LOWRANK_CUDA_LIBRARY: join(out, 'liblowrank_cuda_emu.so'),
          LD_LIBRARY_PATH: tmp,
          LOWRANK_CUDA_GEMM: 'tiled',
        },
  );
  assert.equal(cpu.backend, 'cpu');
  assert.equal(dev.backend, 'cuda');
  assert.equal(cpu.peak, 0);
  assert.ok(dev.peak >= 90 * 70 * 4, `device bytes at peak ${dev.peak}: M was not uploaded, the products ran on the host`);
  assert.deepEqual(dev.m, cpu.m, 'the same input matrix');
  const s1 = cpu.svd.s[0] as number;
  for (const [i, s] of cpu.svd.s.entries()) assert.ok(Math.abs((dev.svd.s[i] as number) - s) <= 1e-5 * s1, `σ${i}`);
  const k = cpu.svd.s.length;
  const e1 = rel(product(dev.svd.u, dev.svd.s, dev.svd.vt, 90, k, 70), product(cpu.svd.u, cpu.svd.s, cpu.svd.vt, 90, k, 70));
  const r = cpu.factor.sigma.length > 0 ? 5 : 0;
  const e2 = rel(product(dev.factor.B, null, dev.factor.A, 90, r, 70), product(cpu.factor.B, null, cpu.factor.A, 90, r, 70));
  console.log(`# measured rank-${k} U diag(σ) Vᵀ rel ${e1.toExponential(2)}; factorDense B A rel ${e2.toExponential(2)}`);
  assert.ok(e1 <= 1e-5, `U diag(σ) Vᵀ rel ${e1}`);
  assert.ok(e2 <= 1e-5, `B A rel ${e2}`);
});
