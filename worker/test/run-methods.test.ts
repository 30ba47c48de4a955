/**
 * `lora-worker run` for the delta-space merges and the dense compression modes against a
 * real registry (PostgreSQL, Redis, MinIO): mergekit_ties and lego merges of registry
 * versions, extract (a LoRA from a fine-tuned Hugging Face directory), base-svd of a base
 * directory and quantize of a registry version; each lands as a version with the right
 * lineage relation (merged_from, extracted_from, compressed_from, quantized_from), and the
 * pulled files hold what the native core computes (rel ≤ 1e-5).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { serviceEnv } from '@lowrank/e2e/env';
import { Redis } from 'ioredis';
import { createToken } from '../../registry-api/src/auth/tokens.ts';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { pull, push } from '../../registry-api/src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { curDecompose, eora, rtnQuantize } from '../src/native/compress-base.ts';
import { factorDense, mergeDeltas } from '../src/native/delta.ts';
import { gemm, type LoraModule, philox } from '../src/native/linalg.ts';
import { readSafetensors, writeSafetensors } from '../src/native/safetensors.ts';
import { readPeftAdapter, writePeftAdapter } from '../src/peft/adapter-dir.ts';
import { readQuantizedAdapter } from '../src/peft/quantized-adapter.ts';
import { delta64, rel } from './support/numeric.ts';
import { runWorker } from './support/worker-cli.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-run-methods-'));
let reg: TestRegistry;
let token = '';
let client: RegistryClient;
let streamNo = 1;
const normal = (n: number, scale = 1) => (philox(21, streamNo++, n, 'normal') as Float32Array).map((v) => v * scale);

const Q = 'model.layers.0.self_attn.q_proj';
const V = 'model.layers.0.self_attn.v_proj';
const randomAdapter = (r: number): Record<string, LoraModule> => ({
  [Q]: { r, in: 32, out: 32, A: normal(r * 32, 0.3), B: normal(32 * r, 0.3), scale: 2 },
  [V]: { r, in: 32, out: 16, A: normal(r * 32, 0.3), B: normal(16 * r, 0.3), scale: 2 },
});

const worker = (spec: unknown) => runWorker(spec, { registry: reg.base, token, tmp });

const version = async (repo: string, ref: string): Promise<any> =>
  (await fetch(`${reg.base}/v1/repos/${repo}/versions/${ref}`, { headers: { authorization: `Bearer ${token}` } })).json();

/** A tiny Hugging Face model directory: one decoder layer's q/v projections and an embedding. */
function modelDir(name: string, weights: Record<string, { shape: number[]; data: Float32Array }>): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: 32 }));
  writeSafetensors(
    join(dir, 'model.safetensors'),
    Object.fromEntries(Object.entries(weights).map(([k, w]) => [k, { dtype: 'F32', ...w }])),
    { format: 'pt' },
  );
  return dir;
}

const inputs: Record<string, LoraModule>[] = [randomAdapter(8), randomAdapter(8)];
before(async () => {
  reg = await startRegistry({ redis: new Redis(`${serviceEnv('REDIS_URL').replace(/\/\d*$/, '')}/8`) });
  await reg.redis.flushdb();
  const org = await reg.prisma.organization.create({ data: { name: 'acme' } });
  const team = await reg.prisma.team.create({ data: { name: 'lab', organizationId: org.id } });
  const user = await reg.prisma.user.create({ data: { handle: 'grace', memberships: { create: { teamId: team.id } } } });
  token = (await createToken(reg.prisma, { userId: user.id, name: 't', scope: 'write' })).token;
  client = new RegistryClient({ registry: reg.base, token });
  await client.json('POST', '/v1/repos', { namespace: 'lab', name: 'bot', baseModel: 'tiny/llama' });
  for (const [i, a] of inputs.entries()) {
    const dir = join(tmp, `in-${i}`);
    writePeftAdapter(dir, a, { base_model_name_or_path: 'tiny/llama' });
    await push(client, dir, 'lab/bot');
  }
});

describe('lora-worker run: delta-space merges', () => {
  it('mergekit_ties of two versions: an adapter at targetRank equal to the core’s merge + SVD, with merged_from', async () => {
    const res = await worker({
      kind: 'AdapterMerge',
      spec: {
        inputs: [
          { repository: 'lab/bot', version: 1 },
          { repository: 'lab/bot', version: 2 },
        ],
        weights: [0.7, 0.5],
        method: 'mergekit_ties',
        density: 0.5,
        deltaScale: 0.9,
        targetRank: 6,
        output: { repository: 'lab/merged', tags: ['ties'] },
      },
    });
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const v = await version('lab/merged', 'ties');
    assert.equal(v.method, 'merge-mergekit_ties');
    assert.equal(v.rank, 6);
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent, l.weight]),
      [
        ['merged_from', 'lab/bot@1', 0.7],
        ['merged_from', 'lab/bot@2', 0.5],
      ],
    );
    assert.ok(v.metrics.retainedEnergyMin > 0 && v.metrics.retainedEnergyMin <= 1);
    assert.equal(v.methodMetadata.deltaScale, 0.9);
    const out = join(tmp, 'merged-ties');
    await pull(client, 'lab/merged', 'ties', out);
    const got = readPeftAdapter(out);
    for (const name of [Q, V]) {
      const mods = inputs.map((a) => a[name] as LoraModule);
      const mix = mergeDeltas(
        mods.map((m) => gemm({ rows: m.out, cols: m.r, data: m.B }, { rows: m.r, cols: m.in, data: m.A }, { alpha: m.scale })),
        { method: 'ties', weights: [0.7, 0.5], density: 0.5, lambda: 0.9 },
      );
      const want = factorDense(mix, { rank: 6 });
      assert.ok(rel(delta64(got.modules[name] as LoraModule), delta64(want.module)) <= 1e-5, name);
      assert.ok(Math.abs(v.methodMetadata.modules[name].retainedEnergy - want.retainedEnergy) <= 1e-9);
    }
  });

  it('lego merges to k clusters per module, seeded', async () => {
    const res = await worker({
      kind: 'AdapterMerge',
      spec: {
        inputs: [
          { repository: 'lab/bot', version: 1 },
          { repository: 'lab/bot', version: 2 },
        ],
        method: 'lego',
        targetRank: 5,
        seed: 3,
        output: { repository: 'lab/merged', tags: ['lego'] },
      },
    });
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const v = await version('lab/merged', 'lego');
    assert.equal(v.rank, 5);
    assert.deepEqual(
      v.methodMetadata.modules[Q].clusterSizes.reduce((a: number, b: number) => a + b, 0),
      16,
    );
  });
});

describe('lora-worker run: compression modes', () => {
  const wq = { shape: [32, 32], data: normal(32 * 32) };
  const wv = { shape: [16, 32], data: normal(16 * 32) };
  const emb = { shape: [64, 32], data: normal(64 * 32) };
  const dq = gemm({ rows: 32, cols: 2, data: normal(64) }, { rows: 2, cols: 32, data: normal(64) });
  const base = () => modelDir('base', { [`${Q}.weight`]: wq, [`${V}.weight`]: wv, 'model.embed_tokens.weight': emb });
  const fineTuned = () =>
    modelDir('ft', {
      [`${Q}.weight`]: { shape: wq.shape, data: wq.data.map((x, i) => x + (dq.data[i] as number)) },
      [`${V}.weight`]: wv,
      'model.embed_tokens.weight': emb,
    });

  it('extract: a rank-2 LoRA of W_ft − W_base for the changed linear only, extracted_from the fine-tune', async () => {
    const baseDir = base();
    const ftDir = fineTuned();
    const res = await worker({
      kind: 'CompressionJob',
      spec: {
        target: 'base',
        mode: 'extract',
        source: { baseModel: { path: baseDir } },
        extract: { fineTunedModel: { path: ftDir } },
        rankPolicy: { fixed: { rank: 2 } },
        output: { repository: 'lab/extracted' },
      },
    });
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const v = await version('lab/extracted', '1');
    assert.equal(v.method, 'extract');
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parentRef]),
      [['extracted_from', `file:${ftDir}`]],
    );
    assert.equal(v.metrics.unchangedModules, 1);
    assert.deepEqual([v.methodMetadata.ranksBefore, v.methodMetadata.ranksAfter], [32, 2]);
    assert.ok(v.methodMetadata.energyKept > 0.999999 && v.methodMetadata.relError < 1e-3); // the delta has rank 2
    const out = join(tmp, 'extracted');
    await pull(client, 'lab/extracted', '1', out);
    const a = readPeftAdapter(out);
    assert.deepEqual(Object.keys(a.modules), [Q]);
    const ft = readSafetensors(join(ftDir, 'model.safetensors')).tensors[`${Q}.weight`]?.data as Float32Array;
    const want = ft.map((x, i) => x - (wq.data[i] as number));
    assert.ok(rel(delta64(a.modules[Q] as LoraModule), want) <= 1e-5);
  });

  it('base-svd: a model version whose weights are W2·W1 at rank 4, compressed_from the base', async () => {
    const baseDir = base();
    const res = await worker({
      kind: 'CompressionJob',
      spec: {
        target: 'base',
        mode: 'base-svd',
        source: { baseModel: { path: baseDir } },
        rankPolicy: { fixed: { rank: 4 } },
        output: { repository: 'lab/base-svd' },
      },
    });
    assert.equal(res.code, 0, res.stderr + res.stdout);
    const v = await version('lab/base-svd', '1');
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parentRef]),
      [['compressed_from', `file:${baseDir}`]],
    );
    const out = join(tmp, 'base-svd');
    await pull(client, 'lab/base-svd', '1', out);
    const model = readSafetensors(join(out, 'model.safetensors')).tensors;
    const factors = readSafetensors(join(out, 'lowrank_factors.safetensors')).tensors;
    const w2 = factors[`${Q}.weight.W2`];
    const w1 = factors[`${Q}.weight.W1`];
    assert.deepEqual(w2?.shape, [32, 4]);
    const prod = gemm({ rows: 32, cols: 4, data: w2?.data as Float32Array }, { rows: 4, cols: 32, data: w1?.data as Float32Array });
    assert.ok(rel(model[`${Q}.weight`]?.data as Float32Array, prod.data) <= 1e-6);
    const want = factorDense({ rows: 32, cols: 32, data: wq.data }, { rank: 4 });
    assert.ok(rel(prod.data, delta64(want.module)) <= 1e-5);
    assert.deepEqual(Array.from(model['model.embed_tokens.weight']?.data as Float32Array), Array.from(emb.data));
  });

  it('quantize: an int8 version quantized_from its source, dequantizing close to it', async () => {
    const res = await worker({
      kind: 'CompressionJob',
      spec: {
        mode: 'quantize',
        source: { adapter: { repository: 'lab/bot', version: 1 } },
        quantize: { bits: 8, scheme: 'int' },
        output: { repository: 'lab/bot', tags: ['int8'] },
      },
    });
    assert.equal(res.code, 0, JSON.stringify(res.result) + res.stderr);
    const v = await version('lab/bot', 'int8');
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parent]),
      [['quantized_from', 'lab/bot@1']],
    );
    const out = join(tmp, 'int8');
    await pull(client, 'lab/bot', 'int8', out);
    const q = readQuantizedAdapter(out);
    for (const name of [Q, V]) assert.ok(rel(delta64(q.modules[name] as LoraModule), delta64(inputs[0]?.[name] as LoraModule)) <= 0.02);
  });

  it('eora: an RTN int4 base compensated in the eigenspace of precomputed calibration inputs', async () => {
    const baseDir = base();
    const x = { [Q]: { shape: [48, 32], data: normal(48 * 32) }, [V]: { shape: [48, 32], data: normal(48 * 32) } };
    const calib = join(tmp, 'calib.safetensors');
    writeSafetensors(calib, Object.fromEntries(Object.entries(x).map(([k, t]) => [k, { dtype: 'F32', ...t }])), { format: 'pt' });
    const res = await worker({
      kind: 'CompressionJob',
      spec: {
        target: 'base',
        mode: 'eora',
        source: { baseModel: { path: baseDir } },
        eora: { rank: 4, compressor: { type: 'rtn', bits: 4, groupSize: 32 } },
        calibration: { dataset: { path: calib } },
        output: { repository: 'lab/eora' },
      },
    });
    assert.equal(res.code, 0, JSON.stringify(res.result) + res.stderr);
    const v = await version('lab/eora', '1');
    assert.equal(v.methodMetadata.activationAware, true);
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parentRef]),
      [['compressed_from', `file:${baseDir}`]],
    );
    assert.ok(v.metrics.relErrorAfterMax < 1);
    const out = join(tmp, 'eora');
    await pull(client, 'lab/eora', '1', out);
    const got = readPeftAdapter(out);
    const m = { rows: 32, cols: 32, data: wq.data };
    const hat = rtnQuantize(m, 4, 32);
    const want = eora(
      { rows: 32, cols: 32, data: wq.data.map((v, i) => v - (hat.data[i] as number)) },
      { rows: 48, cols: 32, data: x[Q].data },
      4,
    );
    assert.ok(rel(delta64(got.modules[Q] as LoraModule), delta64(want.module)) <= 1e-5);
  });

  it('base-cur: actual columns and rows, weighted by calibration column norms, compressed_from the base', async () => {
    const baseDir = base();
    const x = { [Q]: { shape: [40, 32], data: normal(40 * 32) }, [V]: { shape: [40, 32], data: normal(40 * 32) } };
    const calib = join(tmp, 'calib-cur.safetensors');
    writeSafetensors(calib, Object.fromEntries(Object.entries(x).map(([k, t]) => [k, { dtype: 'F32', ...t }])), { format: 'pt' });
    const res = await worker({
      kind: 'CompressionJob',
      spec: {
        target: 'base',
        mode: 'base-cur',
        source: { baseModel: { path: baseDir } },
        cur: { rank: 8 },
        calibration: { dataset: { path: calib } },
        output: { repository: 'lab/cur' },
      },
    });
    assert.equal(res.code, 0, JSON.stringify(res.result) + res.stderr);
    const v = await version('lab/cur', '1');
    assert.equal(v.methodMetadata.activationWeighted, true);
    assert.deepEqual(
      v.lineage.map((l: any) => [l.relation, l.parentRef]),
      [['compressed_from', `file:${baseDir}`]],
    );
    const out = join(tmp, 'cur');
    await pull(client, 'lab/cur', '1', out);
    const model = readSafetensors(join(out, 'model.safetensors')).tensors;
    const idx = JSON.parse(readFileSync(join(out, 'lowrank_cur_indices.json'), 'utf8'));
    const cols: number[] = JSON.parse(idx[`${Q}.weight.cols`]);
    const norms = new Float64Array(32);
    for (let i = 0; i < 40; i++) for (let j = 0; j < 32; j++) norms[j] = (norms[j] as number) + (x[Q].data[i * 32 + j] as number) ** 2;
    const want = curDecompose({ rows: 32, cols: 32, data: wq.data }, 8, Float32Array.from(norms, Math.sqrt));
    assert.deepEqual(cols, want.cols);
    const cur = gemm(gemm(want.c, want.u), want.r);
    assert.ok(rel(model[`${Q}.weight`]?.data as Float32Array, cur.data) <= 1e-6);
  });

  it('refuses calibration text (no forward pass yet), with the reason', async () => {
    const text = join(tmp, 'calib.jsonl');
    writeFileSync(text, '{"text": "hello"}\n');
    const res = await worker({
      kind: 'CompressionJob',
      spec: {
        target: 'base',
        mode: 'base-svd',
        source: { baseModel: { path: base() } },
        baseSvd: { activationAware: true },
        calibration: { dataset: { path: text } },
        rankPolicy: { fixed: { rank: 4 } },
        output: { repository: 'lab/x' },
      },
    });
    assert.equal(res.code, 65, res.stderr + res.stdout);
    assert.match(res.result.message, /forward pass/);
  });
});
