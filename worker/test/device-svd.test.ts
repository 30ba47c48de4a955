/**
 * The SVDs of merges and compressions on the CUDA backend against the CPU's:
 * support/device-svd-cases.ts run in two child processes, LOWRANK_BACKEND=cpu and the
 * emulated CUDA library (as backend-emulated.test.ts; LOWRANK_DEVICE_TESTS=gpu: the real
 * library, driver and cuSOLVER, as scripts/gpu-check runs it).
 * - randomized: the dense operator's products on the device (src/cuda/dense_matrix.cu);
 * - exact, in double: cuSOLVER's gesvd (src/cuda/svd.cu; the emulation's stand-in is
 *   LAPACK's dgesvd behind cuSOLVER's API, test/cuda_emu/cusolver_emu.cc, against the CPU's
 *   dgesdd), both branches of the row-/column-major mapping (wide and tall), factorDense's
 *   energy rule and a ties_svd merge; a matrix under 2^16 elements stays on LAPACK.
 * Tolerances (METHODS §8.1): σ within 1e-5·σ1, the rank-k products U diag(σ) Vᵀ and B A
 * rel ≤ 1e-5 (gaps of 0.3·σ_i at the randomized cuts); the exact factors entry by entry
 * rel ≤ 1e-5 (both in double, rounded to fp32 once; distinct singular values, the sign rule).
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

interface Plain {
  u: number[];
  s: number[];
  vt: number[];
}

interface Result {
  backend: string;
  peak: number;
  peakSmall: number;
  svdInfo: string | null;
  exact: {
    small: Plain;
    wide: Plain;
    tall: Plain;
    energy: { A: number[]; B: number[]; sigma: number[]; r: number };
    merge: { A: number[]; B: number[]; r: number; retained: number };
    dense: Record<string, { ba: number[]; r: number; retained: number | null }>;
    deltaMixes: Record<string, number[]>;
  };
  m: number[];
  svd: { u: number[]; s: number[]; vt: number[] };
  factor: { A: number[]; B: number[]; sigma: number[] };
}

async function run(env: NodeJS.ProcessEnv): Promise<Result> {
  const r = await exec(process.execPath, [cases], { env: { ...process.env, ...env }, maxBuffer: 1 << 27 });
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

let results: Promise<[Result, Result]> | undefined;
/** The two children's results, run once for both tests. */
function both(): Promise<[Result, Result]> {
  results ??= (async () => {
    if (process.env.LOWRANK_DEVICE_TESTS !== 'gpu') {
      await exec('make', ['--no-print-directory', '-C', join(native, 'src', 'cuda'), 'emu', `OUT=${out}`, '-j', '2']);
      // FAKE: an empty libcuda.so.1 stands in for the NVIDIA driver, so the addon goes on to load the library.
      writeFileSync(join(tmp, 'fake.c'), 'int lowrank_fake_nvidia_driver;\n');
      await exec('cc', ['-shared', '-fPIC', '-o', join(tmp, 'libcuda.so.1'), join(tmp, 'fake.c')]);
    }
    const gpu = process.env.LOWRANK_DEVICE_TESTS === 'gpu';
    const pair: [Result, Result] = [
      await run({ LOWRANK_BACKEND: 'cpu' }),
      await run(
        gpu
          ? { LOWRANK_BACKEND: 'cuda' }
          : {
              LOWRANK_BACKEND: 'cuda',
              LOWRANK_CUDA_LIBRARY: join(out, 'liblowrank_cuda_emu.so'),
              LD_LIBRARY_PATH: tmp,
              LOWRANK_CUDA_GEMM: 'tiled',
              LOWRANK_CUSOLVER_LIBRARY: join(out, 'libcusolver_emu.so'),
            },
      ),
    ];
    return pair;
  })();
  return results;
}

test('randomized SVD and randomized factorDense: the CUDA backend (emulated) equals the CPU within tolerance', {
  timeout: 300_000,
}, async () => {
  const [cpu, dev] = await both();
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

/** max |x − y| / max |y| over the entries. */
function entrywise(x: number[], y: number[]): number {
  assert.equal(x.length, y.length, 'the same number of entries');
  let num = 0;
  let den = 0;
  for (const [i, v] of y.entries()) {
    num = Math.max(num, Math.abs((x[i] as number) - v));
    den = Math.max(den, Math.abs(v));
  }
  return num / den;
}

test('exact SVDs in double (cuSOLVER, emulated): wide, tall, factorDense energy and a ties_svd merge equal the CPU', {
  timeout: 300_000,
}, async () => {
  const [cpu, dev] = await both();
  assert.match(dev.svdInfo ?? '', /^cuSOLVER .* gesvd, fp64/, `backendInfo().svd: ${dev.svdInfo}`);
  assert.equal(dev.peakSmall, 0, 'a matrix under 2^16 elements stays on LAPACK');
  assert.ok(dev.peak >= 300 * 260 * 8, `device bytes at peak ${dev.peak}: the exact SVDs did not run on the device`);
  let worst = 0;
  for (const which of ['small', 'wide', 'tall'] as const) {
    const c = cpu.exact[which];
    const d = dev.exact[which];
    for (const part of ['u', 's', 'vt'] as const) {
      const e = entrywise(d[part], c[part]);
      worst = Math.max(worst, e);
      assert.ok(e <= 1e-5, `${which} ${part}: rel ${e}`);
    }
  }
  assert.equal(dev.exact.energy.r, cpu.exact.energy.r, 'the energy rule picks the same rank');
  const eEnergy = entrywise(dev.exact.energy.sigma, cpu.exact.energy.sigma);
  const r = cpu.exact.energy.r;
  const eFactor = rel(
    product(dev.exact.energy.B, null, dev.exact.energy.A, 260, r, 300),
    product(cpu.exact.energy.B, null, cpu.exact.energy.A, 260, r, 300),
  );
  const mr = cpu.exact.merge.r;
  assert.equal(dev.exact.merge.r, mr);
  const eMerge = rel(
    product(dev.exact.merge.B, null, dev.exact.merge.A, 300, mr, 260),
    product(cpu.exact.merge.B, null, cpu.exact.merge.A, 300, mr, 260),
  );
  console.log(
    `# measured exact U, s, Vt entrywise rel ${worst.toExponential(2)}; energy σ ${eEnergy.toExponential(2)}, ` +
      `factorDense B A ${eFactor.toExponential(2)} (rank ${r}); ties_svd B A ${eMerge.toExponential(2)}`,
  );
  assert.ok(eEnergy <= 1e-5 && eFactor <= 1e-5, `factorDense energy: σ ${eEnergy}, B A ${eFactor}`);
  assert.ok(eMerge <= 1e-5, `ties_svd merge B A rel ${eMerge}`);
  assert.ok(Math.abs(dev.exact.merge.retained - cpu.exact.merge.retained) <= 1e-6, 'retained energy');
});

test('the dense stage of svd-type merges on the device (emulated): every combination equals the CPU', { timeout: 300_000 }, async () => {
  const [cpu, dev] = await both();
  const names = Object.keys(cpu.exact.dense);
  assert.equal(names.length, 8);
  const measured: string[] = [];
  for (const name of names) {
    const c = cpu.exact.dense[name];
    const d = dev.exact.dense[name];
    assert.ok(c && d, name);
    assert.equal(d.r, c.r, `${name}: rank`);
    const e = entrywise(d.ba, c.ba);
    measured.push(`${name} ${e.toExponential(1)}`);
    // full-rank cases: B A is the combined matrix (deltas, pruning, combination) through the exact SVD
    assert.ok(e <= 1e-5, `${name}: merged ΔW rel ${e}`);
    if (c.retained !== null) assert.ok(Math.abs((d.retained ?? Number.NaN) - c.retained) <= 1e-6, `${name}: retained energy`);
  }
  console.log(`# measured merged ΔW entrywise rel: ${measured.join(', ')}`);
});

test("mergekit's delta merges on the device (emulated): every method equals the CPU's mix", { timeout: 300_000 }, async () => {
  const [cpu, dev] = await both();
  const names = Object.keys(cpu.exact.deltaMixes);
  assert.equal(names.length, 8);
  const measured: string[] = [];
  for (const name of names) {
    const e = entrywise(dev.exact.deltaMixes[name] ?? [], cpu.exact.deltaMixes[name] ?? []);
    measured.push(`${name} ${e.toExponential(1)}`);
    // the same inputs, the CPU's fp32 operations and integer-exact masks: only the L1 sums' order differs
    assert.ok(e <= 1e-6, `${name}: mix rel ${e}`);
  }
  console.log(`# measured mergekit mix entrywise rel: ${measured.join(', ')}`);
});
