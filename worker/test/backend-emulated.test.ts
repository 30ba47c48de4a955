/**
 * The CUDA kernels' logic checked without a GPU: src/cuda compiled as plain C++ against a
 * CPU emulation of the CUDA runtime (worker/native/test/cuda_emu: one fiber per CUDA
 * thread, __syncthreads a barrier; `make emu`), loaded in place of liblowrank_cuda.so, and
 * the whole cross-backend suite (backend-ops.test.ts) run with its CUDA half on it. This
 * checks indexing, tile edges, masking and reductions; it is not a GPU run (no speed, no
 * memory model, no FMA contraction), which docs/cuda.md keeps apart. The suite runs twice:
 * with the tiled GEMM kernel, and with cuBLAS running the GEMMs — the emulation's stand-in
 * cuBLAS (test/cuda_emu/cublas_emu.cc: cublasGemmEx as documented, column-major, with its
 * argument checks) — with a tiny conversion scratch so every bf16-weight GEMM is k-chunked.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { BACKEND_CASES } from './support/backend-cases.ts';

const exec = promisify(execFile);
const native = join(import.meta.dirname, '..', 'native');
const out = join(native, 'build', 'cuda');
const emuLib = join(out, 'liblowrank_cuda_emu.so');

const cublasEmu = join(out, 'libcublas_emu.so');
const probe = `import { backendInfo } from ${JSON.stringify(join(import.meta.dirname, '..', 'src', 'native', 'backend.ts'))};
    console.log(JSON.stringify(backendInfo()));`;

let built: Promise<NodeJS.ProcessEnv> | undefined;
/** Builds the emulated library (once) and answers the environment that loads it as the CUDA backend. */
function emulated(): Promise<NodeJS.ProcessEnv> {
  built ??= (async () => {
    await exec('make', ['--no-print-directory', '-C', join(native, 'src', 'cuda'), 'emu', `OUT=${out}`, '-j', '2']);
    // FAKE: an empty libcuda.so.1 stands in for the NVIDIA driver, so the addon goes on to load the library.
    const tmp = mkdtempSync(join(tmpdir(), 'lowrank-cuda-emu-'));
    writeFileSync(join(tmp, 'fake.c'), 'int lowrank_fake_nvidia_driver;\n');
    await exec('cc', ['-shared', '-fPIC', '-o', join(tmp, 'libcuda.so.1'), join(tmp, 'fake.c')]);
    const env: NodeJS.ProcessEnv = { ...process.env, LOWRANK_BACKEND: 'cuda', LOWRANK_CUDA_LIBRARY: emuLib, LD_LIBRARY_PATH: tmp };
    delete env.NODE_TEST_CONTEXT; // else the child speaks the runner's internal protocol, not TAP
    for (const k of [
      'LOWRANK_CUBLAS_LIBRARY',
      'LOWRANK_CUDA_GEMM',
      'LOWRANK_CUDA_MATMUL',
      'LOWRANK_CUDA_GEMM_SCRATCH',
      'LOWRANK_CUSOLVER_LIBRARY',
      'LOWRANK_CUDA_SVD',
    ])
      delete env[k];
    return env;
  })();
  return built;
}

const CUBLAS = { LOWRANK_CUBLAS_LIBRARY: cublasEmu, LOWRANK_CUDA_GEMM: 'cublas', LOWRANK_CUDA_GEMM_SCRATCH: '4096' };

for (const [what, extra, gemm] of [
  ['the tiled GEMM kernel', { LOWRANK_CUDA_GEMM: 'tiled' }, /^tiled kernel, fp32 \(LOWRANK_CUDA_GEMM=tiled\)$/],
  ['cuBLAS (the emulated stand-in; k-chunked conversions)', CUBLAS, /^cuBLAS 0\.0\.0 \(.*libcublas_emu\.so\), matmul fp32$/],
] as const) {
  test(`the CUDA half of the cross-backend suite passes on the emulated kernels, GEMMs by ${what}`, { timeout: 600_000 }, async () => {
    const env = { ...(await emulated()), ...extra };
    const info = JSON.parse((await exec(process.execPath, ['--input-type=module', '-e', probe], { env })).stdout);
    assert.match(info.gemm, gemm);
    await suite(env);
  });
}

test('bf16 matmul: the base GEMM takes bf16(x), the adapter stays fp32 (emulated cuBLAS)', async () => {
  const env = { ...(await emulated()), ...CUBLAS, LOWRANK_CUDA_MATMUL: 'bf16' };
  const r = await exec(process.execPath, [join(import.meta.dirname, 'support', 'bf16-matmul-case.ts')], { env });
  const m = JSON.parse(r.stdout.trim());
  assert.equal(m.backend, 'cuda');
  assert.match(m.gemm, /matmul bf16$/);
  console.log(`bf16 matmul: rel ${m.relDefinition.toExponential(2)} to its definition, ${m.relFp32.toExponential(2)} to fp32`);
  assert.ok(m.relDefinition <= 1e-5, `rel to bf16(x) Wᵀ + s·(x Aᵀ) Bᵀ: ${m.relDefinition}`);
  // the rounding happened (bf16 has 8 bits of mantissa: ~1e-3), within METHODS §8.1's bf16 1e-2
  assert.ok(m.relFp32 > 1e-4 && m.relFp32 <= 1e-2, `rel to the fp32 math: ${m.relFp32}`);
});

test('settings: a required cuBLAS that does not load, or a bad setting, make the CUDA backend unavailable with the reason', async () => {
  const base = await emulated();
  for (const [extra, reason] of [
    [{ LOWRANK_CUDA_GEMM: 'cublas', LOWRANK_CUBLAS_LIBRARY: '/nonexistent/libcublas.so' }, /cuBLAS not found .*LOWRANK_CUDA_GEMM=cublas/],
    [{ LOWRANK_CUDA_GEMM: 'fast' }, /LOWRANK_CUDA_GEMM must be one of auto, cublas, tiled, got "fast"/],
    [{ LOWRANK_CUDA_MATMUL: 'fp8' }, /LOWRANK_CUDA_MATMUL must be one of fp32, tf32, bf16, got "fp8"/],
    [{ ...CUBLAS, LOWRANK_CUDA_GEMM_SCRATCH: '10' }, /LOWRANK_CUDA_GEMM_SCRATCH must be a number of elements >= 64/],
    [
      { LOWRANK_CUDA_SVD: 'cusolver', LOWRANK_CUSOLVER_LIBRARY: '/nonexistent/libcusolver.so' },
      /cuSOLVER not found .*LOWRANK_CUDA_SVD=cusolver/,
    ],
    [{ LOWRANK_CUDA_SVD: 'gpu' }, /LOWRANK_CUDA_SVD must be one of auto, cusolver, cpu, got "gpu"/],
  ] as const) {
    const env = { ...base, ...extra, LOWRANK_BACKEND: 'auto' };
    const info = JSON.parse((await exec(process.execPath, ['--input-type=module', '-e', probe], { env })).stdout);
    assert.equal(info.backend, 'cpu', JSON.stringify(extra));
    assert.match(info.reason, reason);
  }
  // auto (the default): without cuBLAS the tiled kernel runs, and says why
  const env = { ...base, LOWRANK_CUBLAS_LIBRARY: '/nonexistent/libcublas.so' };
  const info = JSON.parse((await exec(process.execPath, ['--input-type=module', '-e', probe], { env })).stdout);
  assert.equal(info.backend, 'cuda');
  assert.match(info.gemm, /^tiled kernel, fp32 \(cuBLAS not found \(.*\/nonexistent\/libcublas\.so.*\); install it/);
  // likewise the exact SVDs stay on LAPACK without cuSOLVER, or when told to, and say why
  for (const [extra, svd] of [
    [
      { LOWRANK_CUSOLVER_LIBRARY: '/nonexistent/libcusolver.so' },
      /^cpu LAPACK \(cuSOLVER not found \(.*\/nonexistent\/libcusolver\.so.*\); install it/,
    ],
    [{ LOWRANK_CUDA_SVD: 'cpu', LOWRANK_CUSOLVER_LIBRARY: join(out, 'libcusolver_emu.so') }, /^cpu LAPACK \(LOWRANK_CUDA_SVD=cpu\)$/],
    [{ LOWRANK_CUSOLVER_LIBRARY: join(out, 'libcusolver_emu.so') }, /^cuSOLVER 0\.0\.0 gesvd, fp64 \(.*libcusolver_emu\.so\)$/],
  ] as const) {
    const i = JSON.parse((await exec(process.execPath, ['--input-type=module', '-e', probe], { env: { ...base, ...extra } })).stdout);
    assert.equal(i.backend, 'cuda');
    assert.match(i.svd, svd);
  }
});

async function suite(env: NodeJS.ProcessEnv): Promise<void> {
  const suite = join(import.meta.dirname, 'backend-ops.test.ts');
  const r = await exec(process.execPath, ['--test', '--test-reporter=tap', suite], { env, maxBuffer: 1 << 24 }).catch(
    (e: { stdout: string; stderr: string }) => assert.fail(`the suite failed on the emulated kernels:\n${e.stdout}\n${e.stderr}`),
  );
  const info = JSON.parse((await exec(process.execPath, ['--input-type=module', '-e', probe], { env })).stdout);
  assert.equal(info.backend, 'cuda');
  assert.match(info.device, /^CPU emulation of the CUDA kernels \(not a GPU\)/, 'the suite did not run on the emulation');
  const cudaLines = r.stdout.split('\n').filter((l) => /^\s*(not )?ok \d+ - .*\[cuda\]/.test(l));
  assert.equal(cudaLines.length, BACKEND_CASES.length + 1, r.stdout);
  for (const l of cudaLines) assert.match(l, /^\s*ok \d+ - (?!.*# SKIP)/, l);
}
