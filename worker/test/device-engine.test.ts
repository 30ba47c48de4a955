/**
 * The CUDA device-resident training engine (docs/cuda.md) checked without a GPU: the
 * emulated library (`make emu`, as backend-emulated.test.ts) loaded as the CUDA backend,
 * and support/device-engine-cases.ts run against it in a child process (the backend is
 * chosen once per process): per family shape, one step's loss and every LoRA gradient and
 * 3 AdamW steps against the CPU engine, activation recomputation (the same bytes), DoRA, and
 * the refusals that keep the CPU engine. Twice: GEMMs by the tiled kernel, and by cuBLAS (the
 * emulation's stand-in, test/cuda_emu/cublas_emu.cc; k-chunked bf16-weight conversions).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { DEVICE_SHAPES } from './support/device-shapes.ts';

const exec = promisify(execFile);
const native = join(import.meta.dirname, '..', 'native');
const out = join(native, 'build', 'cuda');
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-device-engine-emu-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const GEMMS = {
  'the tiled kernel': { LOWRANK_CUDA_GEMM: 'tiled' },
  cuBLAS: {
    LOWRANK_CUDA_GEMM: 'cublas',
    LOWRANK_CUBLAS_LIBRARY: join(out, 'libcublas_emu.so'),
    LOWRANK_CUDA_GEMM_SCRATCH: '4096',
    // The loss in chunks of 7 tokens (32 or 16 per batch: several chunks and a ragged last one).
    LOWRANK_CUDA_LOGITS_CHUNK: '7',
    // The attention backward one head at a time (sequences of 16 tokens: 16² floats of P and dS).
    LOWRANK_CUDA_ATTENTION_SCRATCH: '256',
  },
};

const cases = join(import.meta.dirname, 'support', 'device-engine-cases.ts');

/** The emulated library as the CUDA backend of a child process (the backend is chosen once per process). */
async function emulatedEnv(extra: Record<string, string>): Promise<NodeJS.ProcessEnv> {
  await exec('make', ['--no-print-directory', '-C', join(native, 'src', 'cuda'), 'emu', `OUT=${out}`, '-j', '2']);
  // FAKE: an empty libcuda.so.1 stands in for the NVIDIA driver, so the addon goes on to load the library.
  writeFileSync(join(tmp, 'fake.c'), 'int lowrank_fake_nvidia_driver;\n');
  await exec('cc', ['-shared', '-fPIC', '-o', join(tmp, 'libcuda.so.1'), join(tmp, 'fake.c')]);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    LOWRANK_BACKEND: 'cuda',
    LOWRANK_CUDA_LIBRARY: join(out, 'liblowrank_cuda_emu.so'),
    LD_LIBRARY_PATH: tmp,
    LOWRANK_CUDA_MATMUL: 'fp32',
    ...extra,
  };
  delete env.NODE_TEST_CONTEXT; // else the child speaks the runner's internal protocol, not TAP
  return env;
}

for (const [name, value, reason] of [
  ['LOWRANK_CUDA_LOGITS_CHUNK', '0', /LOWRANK_CUDA_LOGITS_CHUNK must be a number of tokens >= 1, got \\?"0\\?"/],
  ['LOWRANK_CUDA_ATTENTION_SCRATCH', 'lots', /LOWRANK_CUDA_ATTENTION_SCRATCH must be a number of floats >= 1, got \\?"lots\\?"/],
] as const)
  test(`a bad ${name} fails the step and names the setting`, { timeout: 300_000 }, async () => {
    const env = await emulatedEnv({ [name]: value });
    const args = ['--test', '--test-reporter=tap', '--test-name-pattern', "^llama: one step's loss", cases];
    const r = await exec(process.execPath, args, { env, maxBuffer: 1 << 24 }).then(
      () => assert.fail(`the step ran with ${name}=${value}`),
      (e: { stdout: string }) => e,
    );
    assert.match(r.stdout, reason);
  });

for (const [what, gemm] of Object.entries(GEMMS))
  test(`the device engine matches the CPU engine on every family shape (emulated CUDA, GEMMs by ${what})`, {
    timeout: 900_000,
  }, async () => {
    const env = await emulatedEnv(gemm);
    const r = await exec(process.execPath, ['--test', '--test-reporter=tap', cases], { env, maxBuffer: 1 << 24 }).catch(
      (e: { stdout: string; stderr: string }) => assert.fail(`the device engine cases failed:\n${e.stdout}\n${e.stderr}`),
    );
    const lines = r.stdout.split('\n').filter((l) => /^(not )?ok \d+ - /.test(l));
    // the backend check, 2 per shape, recomputation, DoRA and LoRA-SB without and with dropout, generation, bf16 matmul, the refusals
    assert.equal(lines.length, 9 + 2 * DEVICE_SHAPES.length, r.stdout);
    for (const l of lines) assert.match(l, /^ok \d+ - (?!.*# SKIP)/, l);
    // The measured errors, for the log (docs/cuda.md quotes them).
    for (const l of r.stdout.split('\n')) if (l.includes('measured')) console.log(l.replace(/^# \\?# /, ''));
  });
