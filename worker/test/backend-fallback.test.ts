/**
 * Backend selection as a real process sees it (LOWRANK_BACKEND), and the CUDA library
 * that the build (CI: LOWRANK_CUDA=on) must have produced. The fallback cases point
 * LOWRANK_CUDA_LIBRARY at a missing file, so they fall back on GPU machines too. The one
 * fake here is a fake NVIDIA driver (an empty libcuda.so.1): with it the real
 * liblowrank_cuda.so is dlopen()ed and its device probe runs and fails.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { EXIT } from '../src/exit-codes.ts';

const exec = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const backendModule = join(root, 'worker', 'src', 'native', 'backend.ts');
const cudaLib = join(root, 'worker', 'native', 'build', 'cuda', 'liblowrank_cuda.so');
const addon = join(root, 'worker', 'native', 'build', 'Release', 'lowrank_native.node');
const cli = join(root, 'worker', 'src', 'cli.ts');
const examples = join(root, 'crds', 'examples');
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-backend-'));
const missingLib = join(tmp, 'no-such-liblowrank_cuda.so');
const ciMustBuild = process.env.CI === 'true' || process.env.LOWRANK_CUDA === 'on';
const notBuilt = existsSync(cudaLib) ? false : `${cudaLib} is not built (scripts/build-cuda, or LOWRANK_CUDA=on scripts/build-native)`;

interface Child {
  code: number;
  stdout: string;
  stderr: string;
}

/** A node process that loads the addon, prints backendInfo() or the error's code and message. */
async function probe(env: Record<string, string>): Promise<Child> {
  const script = `
    import { backendInfo } from ${JSON.stringify(backendModule)};
    try { console.log(JSON.stringify(backendInfo())); }
    catch (e) { console.log(JSON.stringify({ error: e.code, message: e.message })); }`;
  return exec(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env } }).then(
    (r) => ({ code: 0, ...r }),
    (e: Child) => e,
  );
}

const jsonLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('LOWRANK_BACKEND', () => {
  test('auto without a usable CUDA backend runs on the CPU and logs one line saying why', async () => {
    const r = await probe({ LOWRANK_BACKEND: 'auto', LOWRANK_CUDA_LIBRARY: missingLib });
    const [info] = jsonLines(r.stdout);
    assert.equal(info?.backend, 'cpu');
    assert.equal(info?.requested, 'auto');
    assert.equal(typeof info?.reason, 'string');
    const lines = jsonLines(r.stderr).filter((l) => l.event === 'cuda_fallback');
    assert.equal(lines.length, 1, r.stderr);
    assert.equal(lines[0]?.level, 'warn');
    assert.equal(lines[0]?.reason, info?.reason);
    assert.match(String(info?.reason), /libcuda\.so\.1|no-such-liblowrank_cuda\.so does not exist/);
  });

  test('unset means auto', async () => {
    const r = await probe({ LOWRANK_BACKEND: '', LOWRANK_CUDA_LIBRARY: missingLib });
    assert.equal(jsonLines(r.stdout)[0]?.requested, 'auto');
  });

  test('cuda without a usable CUDA backend is an error naming the reason', async () => {
    const r = await probe({ LOWRANK_BACKEND: 'cuda', LOWRANK_CUDA_LIBRARY: missingLib });
    const [res] = jsonLines(r.stdout);
    assert.equal(res?.error, 'unavailable');
    assert.match(String(res?.message), /^LOWRANK_BACKEND=cuda but the CUDA backend is unavailable: .+/);
  });

  test('cpu runs on the CPU without trying CUDA and logs nothing', async () => {
    const r = await probe({ LOWRANK_BACKEND: 'cpu' });
    const [info] = jsonLines(r.stdout);
    assert.deepEqual(info, { requested: 'cpu', backend: 'cpu', cudaAvailable: false });
    assert.equal(jsonLines(r.stderr).length, 0);
  });

  test('an unknown value is refused, naming the variable', async () => {
    const r = await probe({ LOWRANK_BACKEND: 'gpu' });
    const [res] = jsonLines(r.stdout);
    assert.equal(res?.error, 'invalid_request');
    assert.match(String(res?.message), /LOWRANK_BACKEND must be cpu, cuda or auto, got "gpu"/);
  });

  test('lora-worker run logs the backend at startup, refuses cuda without a GPU (75) and a bad value (64)', async () => {
    const worker = (backend: string): Promise<Child> =>
      exec(process.execPath, [cli, 'run', '--spec', join(examples, 'adapterjob-train-lora.yaml'), '--work-dir', join(tmp, 'work')], {
        env: { ...process.env, LOWRANK_BACKEND: backend, LOWRANK_CUDA_LIBRARY: missingLib, LOWRANK_REGISTRY_URL: 'http://127.0.0.1:9' },
      }).then(
        (x) => ({ code: 0, ...x }),
        (e: Child) => e,
      );
    // The example's dataset lives in S3, so the job itself stops early (65); the startup line comes first.
    const cpu = await worker('cpu');
    const line = jsonLines(cpu.stdout).find((l) => l.event === 'native_backend');
    assert.deepEqual(
      { requested: line?.requested, backend: line?.backend, engine: line?.engine },
      { requested: 'cpu', backend: 'cpu', engine: 'cpu' },
      cpu.stdout,
    );
    const cuda = await worker('cuda');
    assert.equal(cuda.code, EXIT.retryable, cuda.stderr);
    assert.match(cuda.stderr, /LOWRANK_BACKEND=cuda but the CUDA backend is unavailable/);
    const bad = await worker('gpu');
    assert.equal(bad.code, EXIT.usage, bad.stderr);
    assert.match(bad.stderr, /LOWRANK_BACKEND must be cpu, cuda or auto, got "gpu"/);
  });
});

describe('the CUDA library built by scripts/build-cuda', () => {
  const expected = [
    'lrk_cuda_abi',
    'lrk_cuda_probe',
    'lrk_cuda_ops',
    'lrk_cuda_last_error',
    'lrk_cuda_lora_forward',
    'lrk_cuda_lora_backward',
    'lrk_cuda_adamw',
    'lrk_cuda_rmsnorm_forward',
    'lrk_cuda_rope_apply',
    'lrk_cuda_swiglu_forward',
    'lrk_cuda_attention_forward',
    'lrk_cuda_factor_sum',
    'lrk_cuda_rmsnorm_backward',
    'lrk_cuda_swiglu_backward',
    'lrk_cuda_cross_entropy',
    'lrk_cuda_dropout_mask',
    'lrk_cuda_attention_backward',
    'lrk_cuda_bench_lora_layer',
    // the device engine (device_engine.h)
    'lrk_dev_abi',
    'lrk_dev_create',
    'lrk_dev_destroy',
    'lrk_dev_set_tensor',
    'lrk_dev_set_rope',
    'lrk_dev_set_adapter',
    'lrk_dev_set_recompute',
    'lrk_dev_num_params',
    'lrk_dev_read',
    'lrk_dev_write',
    'lrk_dev_zero_grad',
    'lrk_dev_forward',
    'lrk_dev_forward_backward',
    'lrk_dev_optimizer_step',
  ];

  test('exists (CI builds it: LOWRANK_CUDA=on)', { skip: ciMustBuild ? false : notBuilt }, () => {
    assert.ok(existsSync(cudaLib), `${cudaLib} is missing: the CUDA build did not run`);
  });

  test('exports the backend_ops.h and device_engine.h symbols and nothing of the CUDA runtime (nm -D)', { skip: notBuilt }, async () => {
    const { stdout } = await exec('nm', ['-D', '--defined-only', cudaLib]);
    const names = new Set(stdout.split('\n').map((l) => l.trim().split(/\s+/)[2]));
    for (const s of expected) assert.ok(names.has(s), `${s} is not exported`);
    assert.ok(![...names].some((n) => n?.startsWith('cuda')), 'the static CUDA runtime leaks its symbols');
  });

  test('needs no CUDA library at link time; the addon links none either (readelf -d)', { skip: notBuilt }, async () => {
    for (const file of [cudaLib, addon]) {
      const { stdout } = await exec('readelf', ['-d', file]);
      const needed = [...stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
      assert.ok(needed.length > 0, `${file}: no NEEDED entries parsed`);
      for (const lib of needed) assert.doesNotMatch(String(lib), /cuda|cublas/, `${file} links ${lib}`);
    }
  });

  test('carries sm_80 and sm_90 SASS and compute_90 PTX (its .nv_fatbin section)', { skip: notBuilt }, async () => {
    const { stdout } = await exec('readelf', ['-S', '-W', cudaLib]);
    const sec = /\.nv_fatbin\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)/.exec(stdout);
    assert.ok(sec?.[1] && sec[2], 'no .nv_fatbin section');
    const offset = Number.parseInt(sec[1], 16);
    const fat = readFileSync(cudaLib).subarray(offset, offset + Number.parseInt(sec[2], 16));
    // One fatbin per object: magic 0xBA55ED50, header size (u16 at 6), payload size (u64 at 8);
    // each entry: kind (u16: 1 PTX, 2 ELF), header size (u32 at 4), size (u64 at 8), arch (u32 at 28).
    const seen = new Set<string>();
    for (let p = 0; p + 16 <= fat.length; ) {
      if (fat.readUInt32LE(p) !== 0xba55ed50) {
        p += 8;
        continue;
      }
      const end = p + fat.readUInt16LE(p + 6) + Number(fat.readBigUInt64LE(p + 8));
      for (let q = p + fat.readUInt16LE(p + 6); q < end; q += fat.readUInt32LE(q + 4) + Number(fat.readBigUInt64LE(q + 8)))
        seen.add(`${fat.readUInt16LE(q) === 1 ? 'compute' : 'sm'}_${fat.readUInt32LE(q + 28)}`);
      p = end;
    }
    assert.deepEqual([...seen].sort(), ['compute_90', 'sm_80', 'sm_90']);
  });

  test('is dlopen()ed and probed: with a fake driver its probe reports the driver as unusable', { skip: notBuilt }, async () => {
    // FAKE: an empty libcuda.so.1 stands in for the NVIDIA driver.
    const src = join(tmp, 'fake.c');
    writeFileSync(src, 'int lowrank_fake_nvidia_driver;\n');
    await exec('cc', ['-shared', '-fPIC', '-o', join(tmp, 'libcuda.so.1'), src]);
    const r = await probe({ LOWRANK_BACKEND: 'auto', LOWRANK_CUDA_LIBRARY: '', LD_LIBRARY_PATH: tmp });
    const [info] = jsonLines(r.stdout);
    assert.equal(info?.backend, 'cpu');
    assert.equal(info?.library, cudaLib);
    assert.match(String(info?.reason), /^no usable CUDA device: cudaGetDeviceCount: cuda\w+ \(.+\)$/);
  });
});
