/**
 * The CUDA kernels' logic checked without a GPU: src/cuda compiled as plain C++ against a
 * CPU emulation of the CUDA runtime (worker/native/test/cuda_emu: one fiber per CUDA
 * thread, __syncthreads a barrier; `make emu`), loaded in place of liblowrank_cuda.so, and
 * the whole cross-backend suite (backend-ops.test.ts) run with its CUDA half on it. This
 * checks indexing, tile edges, masking and reductions; it is not a GPU run (no speed, no
 * memory model, no FMA contraction), which docs/cuda.md keeps apart.
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

test('the CUDA half of the cross-backend suite passes on the emulated kernels', { timeout: 600_000 }, async () => {
  await exec('make', ['--no-print-directory', '-C', join(native, 'src', 'cuda'), 'emu', `OUT=${out}`, '-j', '2']);
  // FAKE: an empty libcuda.so.1 stands in for the NVIDIA driver, so the addon goes on to load the library.
  const tmp = mkdtempSync(join(tmpdir(), 'lowrank-cuda-emu-'));
  writeFileSync(join(tmp, 'fake.c'), 'int lowrank_fake_nvidia_driver;\n');
  await exec('cc', ['-shared', '-fPIC', '-o', join(tmp, 'libcuda.so.1'), join(tmp, 'fake.c')]);
  const suite = join(import.meta.dirname, 'backend-ops.test.ts');
  const env: NodeJS.ProcessEnv = { ...process.env, LOWRANK_BACKEND: 'cuda', LOWRANK_CUDA_LIBRARY: emuLib, LD_LIBRARY_PATH: tmp };
  delete env.NODE_TEST_CONTEXT; // else the child speaks the runner's internal protocol, not TAP
  const r = await exec(process.execPath, ['--test', '--test-reporter=tap', suite], { env, maxBuffer: 1 << 24 }).catch(
    (e: { stdout: string; stderr: string }) => assert.fail(`the suite failed on the emulated kernels:\n${e.stdout}\n${e.stderr}`),
  );
  const probe = `import { backendInfo } from ${JSON.stringify(join(import.meta.dirname, '..', 'src', 'native', 'backend.ts'))};
    console.log(JSON.stringify(backendInfo()));`;
  const info = JSON.parse((await exec(process.execPath, ['--input-type=module', '-e', probe], { env })).stdout);
  assert.equal(info.backend, 'cuda');
  assert.match(info.device, /^CPU emulation of the CUDA kernels \(not a GPU\)/, 'the suite did not run on the emulation');
  const cudaLines = r.stdout.split('\n').filter((l) => /^\s*(not )?ok \d+ - .*\[cuda\]/.test(l));
  assert.equal(cudaLines.length, BACKEND_CASES.length + 1, r.stdout);
  for (const l of cudaLines) assert.match(l, /^\s*ok \d+ - (?!.*# SKIP)/, l);
});
