/**
 * The training engine without a Python peer: model directories it must refuse (with the
 * field or tensor named), argument checks, the seeded LoRA init, and determinism (the
 * same seed and thread count give bit-identical losses and factors). The model is a tiny
 * random Llama written here with our safetensors writer.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LowrankError } from '@lowrank/crds/errors';
import { philox } from '../src/native/linalg.ts';
import { type WritableTensor, writeSafetensors } from '../src/native/safetensors.ts';
import { initLora, lrLambda, PROJECTIONS, setTrainThreads, type TokenBatch, TrainModel, trainThreads } from '../src/native/train.ts';
import { loadCheckpoint, saveCheckpoint } from '../src/native/train-checkpoint.ts';
import { rel } from './support/numeric.ts';

const work = mkdtempSync(join(tmpdir(), 'lowrank-train-engine-'));
after(() => rmSync(work, { recursive: true, force: true }));

const cfg = {
  model_type: 'llama',
  hidden_act: 'silu',
  vocab_size: 50,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 32,
  rms_norm_eps: 1e-6,
  rope_parameters: { rope_type: 'default', rope_theta: 10000 },
  tie_word_embeddings: false,
};

function weights(c: typeof cfg): Record<string, WritableTensor> {
  let stream = 1;
  const rand = (shape: number[], std: number): WritableTensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = philox(9, stream++, n, 'normal');
    return { dtype: 'F32', shape, data: Float32Array.from(v, (x) => x * std) };
  };
  const ones = (n: number): WritableTensor => ({ dtype: 'F32', shape: [n], data: new Float32Array(n).fill(1) });
  const H = c.hidden_size;
  const hd = H / c.num_attention_heads;
  const kv = c.num_key_value_heads * hd;
  const t: Record<string, WritableTensor> = {
    'model.embed_tokens.weight': rand([c.vocab_size, H], 0.5),
    'model.norm.weight': ones(H),
    'lm_head.weight': rand([c.vocab_size, H], 0.2),
  };
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    t[`${p}input_layernorm.weight`] = ones(H);
    t[`${p}post_attention_layernorm.weight`] = ones(H);
    t[`${p}self_attn.q_proj.weight`] = rand([H, H], 0.2);
    t[`${p}self_attn.k_proj.weight`] = rand([kv, H], 0.2);
    t[`${p}self_attn.v_proj.weight`] = rand([kv, H], 0.2);
    t[`${p}self_attn.o_proj.weight`] = rand([H, H], 0.2);
    t[`${p}mlp.gate_proj.weight`] = rand([c.intermediate_size, H], 0.2);
    t[`${p}mlp.up_proj.weight`] = rand([c.intermediate_size, H], 0.2);
    t[`${p}mlp.down_proj.weight`] = rand([H, c.intermediate_size], 0.2);
  }
  return t;
}

const good = join(work, 'good');

before(() => {
  mkdirSync(good);
  writeFileSync(join(good, 'config.json'), JSON.stringify(cfg));
  writeSafetensors(join(good, 'model.safetensors'), weights(cfg));
});

/** A copy of the good model with its config.json replaced and/or tensors changed. */
function variant(name: string, config: unknown, edit?: (t: Record<string, WritableTensor>) => void): string {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
  if (edit) {
    const t = weights(cfg);
    edit(t);
    writeSafetensors(join(dir, 'model.safetensors'), t);
  } else {
    cpSync(join(good, 'model.safetensors'), join(dir, 'model.safetensors'));
  }
  return dir;
}

async function rejects(dir: string, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(TrainModel.load(dir), (err: unknown) => {
    assert.ok(err instanceof LowrankError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

const batch = (rows: number, seq: number, salt: number, prompt = 2): TokenBatch => {
  const tokens = Int32Array.from({ length: rows * seq }, (_, i) => (i * 31 + salt * 17) % cfg.vocab_size);
  const labels = tokens.map((t, i) => (i % seq < prompt ? -100 : t));
  return { tokens, labels, rows, seq };
};

describe('training engine: loading', () => {
  it('loads a Llama directory and reports its shape', async () => {
    const m = await TrainModel.load(good);
    assert.equal(m.config.modelType, 'llama');
    assert.equal(m.config.numLayers, 2);
    assert.equal(m.config.headDim, 4);
    assert.equal(m.config.numKvHeads, 2);
    const expected = 2 * 50 * 16 + 16 + 2 * (2 * 16 + 16 * 16 * 2 + 8 * 16 * 2 + 3 * 24 * 16);
    assert.equal(m.config.numParams, expected);
  });

  it('refuses a directory without config.json or weights', async () => {
    await rejects(join(work, 'absent'), 'not_found', /config\.json is missing/);
    const dir = join(work, 'no-weights');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    await rejects(dir, 'not_found', /neither model\.safetensors nor model\.safetensors\.index\.json/);
  });

  it('names the config field that is wrong', async () => {
    await rejects(variant('bad-json', '{"model_type": "llama",'), 'invalid_file', /invalid JSON at byte/);
    await rejects(variant('gpt2', { ...cfg, model_type: 'gpt2' }), 'invalid_file', /"model_type" is 'gpt2'/);
    const { hidden_size: _h, ...noHidden } = cfg;
    await rejects(variant('no-hidden', noHidden), 'invalid_file', /"hidden_size" is missing/);
    await rejects(variant('heads', { ...cfg, num_key_value_heads: 3 }), 'invalid_file', /"num_key_value_heads" \(3\) must divide/);
    await rejects(variant('act', { ...cfg, hidden_act: 'gelu' }), 'invalid_file', /"hidden_act" is 'gelu'/);
    await rejects(
      variant('yarn', { ...cfg, rope_parameters: { rope_type: 'yarn', rope_theta: 10000, factor: 4 } }),
      'invalid_file',
      /"rope_parameters\.rope_type" is 'yarn'/,
    );
    await rejects(variant('neg', { ...cfg, vocab_size: -5 }), 'invalid_file', /"vocab_size" must be a positive integer/);
  });

  it('names the tensor that is missing, mis-shaped or of the wrong dtype', async () => {
    await rejects(
      variant('missing', cfg, (t) => {
        delete t['model.layers.1.mlp.up_proj.weight'];
      }),
      'invalid_file',
      /tensor "model\.layers\.1\.mlp\.up_proj\.weight" is missing/,
    );
    await rejects(
      variant('shape', cfg, (t) => {
        t['model.layers.0.self_attn.k_proj.weight'] = { dtype: 'F32', shape: [16, 16], data: new Float32Array(256) };
      }),
      'invalid_file',
      /"model\.layers\.0\.self_attn\.k_proj\.weight" has shape \[16, 16\], expected \[8, 16\]/,
    );
    await rejects(
      variant('dtype', cfg, (t) => {
        t['model.norm.weight'] = { dtype: 'I8', shape: [16], data: new Int8Array(16) };
      }),
      'invalid_file',
      /"model\.norm\.weight" has dtype I8/,
    );
    // Tied embeddings need no lm_head; untied ones do.
    await rejects(
      variant('no-head', cfg, (t) => {
        delete t['lm_head.weight'];
      }),
      'invalid_file',
      /"lm_head\.weight" is missing/,
    );
    const tied = variant('tied', { ...cfg, tie_word_embeddings: true }, (t) => {
      delete t['lm_head.weight'];
    });
    assert.equal((await TrainModel.load(tied)).config.tieWordEmbeddings, true);
  });

  it('loads shards through model.safetensors.index.json and names a missing shard', async () => {
    const dir = join(work, 'sharded');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const all = weights(cfg);
    const names = Object.keys(all).sort();
    const map: Record<string, string> = {};
    const shards: Record<string, WritableTensor>[] = [{}, {}];
    names.forEach((n, i) => {
      const k = i % 2;
      (shards[k] as Record<string, WritableTensor>)[n] = all[n] as WritableTensor;
      map[n] = `model-0000${k + 1}-of-00002.safetensors`;
    });
    for (const [k, s] of shards.entries()) writeSafetensors(join(dir, `model-0000${k + 1}-of-00002.safetensors`), s);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
    const sharded = await TrainModel.load(dir);
    const single = await TrainModel.load(good);
    const b = batch(1, 6, 1);
    const [x, y] = await Promise.all([sharded.forward(b, { logits: true }), single.forward(b, { logits: true })]);
    assert.deepEqual(x.logits, y.logits);
    rmSync(join(dir, 'model-00002-of-00002.safetensors'));
    await rejects(dir, 'not_found', /model-00002-of-00002\.safetensors: shard named by model\.safetensors\.index\.json is missing/);
  });
});

describe('training engine: arguments', () => {
  it('refuses bad batches and adapters with what to fix', async () => {
    const m = await TrainModel.load(good);
    await assert.rejects(m.forward({ tokens: new Int32Array(5), rows: 1, seq: 6 }), /tokens must be an Int32Array of rows x seq = 6/);
    await assert.rejects(
      m.forward({ tokens: Int32Array.from([1, 2, 50]), rows: 1, seq: 3 }),
      (e: unknown) => e instanceof LowrankError && e.code === 'invalid_request' && /token id 50 .* outside the vocabulary/.test(e.message),
    );
    await assert.rejects(m.forward({ tokens: new Int32Array(33), rows: 1, seq: 33 }), /exceeds the model's max_position_embeddings \(32\)/);
    await assert.rejects(m.trainStep([batch(1, 4, 0)], { lr: 1e-3 }), /set an adapter/);
    assert.throws(
      () =>
        m.setAdapter({
          'model.layers.0.mlp.q_proj': { r: 1, in: 16, out: 16, A: new Float32Array(16), B: new Float32Array(16), scale: 1 },
        }),
      /not a Llama-family projection/,
    );
    assert.throws(
      () =>
        m.setAdapter({
          'model.layers.0.self_attn.q_proj': { r: 2, in: 16, out: 16, A: new Float32Array(16), B: new Float32Array(32), scale: 1 },
        }),
      /A has 16 entries, expected 2 x 16/,
    );
    m.setAdapter(initLora(m.config, { r: 2, alpha: 4, targets: ['q_proj'], seed: 1 }));
    const running = m.forward(batch(1, 4, 0));
    assert.throws(() => m.adapter(), /adapter\(\) while a forward, step or generation is running/);
    await running;
    const allMasked = batch(1, 4, 0, 4);
    await assert.rejects(
      m.trainStep([allMasked], { lr: 1e-3 }),
      (e: unknown) => e instanceof LowrankError && /no labelled token/.test(e.message),
    );
    await assert.rejects(m.trainStep([batch(1, 4, 0)], { lr: 1e-3, schedule: 'cosine' }), /optimizer\.totalSteps must be >= 1/);
  });

  it('initLora draws PEFT-shaped factors reproducibly from the seed', async () => {
    const m = await TrainModel.load(good);
    const a = initLora(m.config, { r: 3, alpha: 6, targets: ['q_proj', 'down_proj'], seed: 5 });
    const b = initLora(m.config, { r: 3, alpha: 6, targets: ['q_proj', 'down_proj'], seed: 5 });
    const c = initLora(m.config, { r: 3, alpha: 6, targets: ['q_proj', 'down_proj'], seed: 6 });
    assert.deepEqual(a, b);
    const q = a['model.layers.1.self_attn.q_proj'];
    const d = a['model.layers.0.mlp.down_proj'];
    assert.ok(q && d);
    assert.equal(q.scale, 2);
    assert.equal(d.in, 24);
    assert.ok(d.A.every((v) => Math.abs(v) <= 1 / Math.sqrt(24)));
    assert.ok(d.B.every((v) => v === 0));
    assert.notDeepEqual(a['model.layers.0.mlp.down_proj']?.A, c['model.layers.0.mlp.down_proj']?.A);
    assert.equal(
      initLora(m.config, { r: 4, alpha: 8, useRslora: true, targets: ['v_proj'], seed: 1 })['model.layers.0.self_attn.v_proj']?.scale,
      4,
    );
  });

  it('initLora applies PEFT rank/alpha patterns; evaluate weights batches by labelled tokens', async () => {
    const m = await TrainModel.load(good);
    const mods = initLora(m.config, {
      r: 4,
      alpha: 8,
      targets: ['q_proj', 'down_proj'],
      rankPattern: { 'model.layers.0.self_attn.q_proj': 2 },
      alphaPattern: { down_proj: 2 },
      seed: 1,
    });
    assert.equal(mods['model.layers.0.self_attn.q_proj']?.r, 2);
    assert.equal(mods['model.layers.0.self_attn.q_proj']?.scale, 4);
    assert.equal(mods['model.layers.1.self_attn.q_proj']?.r, 4);
    assert.equal(mods['model.layers.1.mlp.down_proj']?.scale, 0.5);
    m.setAdapter(mods);
    const [x, y] = [batch(2, 6, 1), batch(1, 9, 2, 5)];
    const [fx, fy] = [await m.forward(x), await m.forward(y)];
    const ev = await m.evaluate([x, y]);
    assert.equal(ev.tokens, fx.count + fy.count);
    assert.ok(Math.abs(ev.loss - (fx.loss * fx.count + fy.loss * fy.count) / ev.tokens) < 1e-12);
    assert.ok(Math.abs(ev.perplexity - Math.exp(ev.loss)) < 1e-9);
  });

  it('LoRA dropout: masks reproducible per (seed, step, micro-batch), keep rate 1 - p, refused with DoRA', async () => {
    const m = await TrainModel.load(good);
    const mods = initLora(m.config, { r: 2, alpha: 4, targets: ['q_proj', 'up_proj'], seed: 1 });
    for (const mod of Object.values(mods)) mod.B.fill(0.3); // B != 0, so the adapter (and its dropout) matters
    m.setAdapter(mods);
    m.setDropout(0.25, 5);
    const path = 'model.layers.0.self_attn.q_proj';
    const mask = m.dropoutMask(path, 3, 1, 400);
    assert.deepEqual(m.dropoutMask(path, 3, 1, 400), mask);
    assert.notDeepEqual(m.dropoutMask(path, 3, 2, 400), mask);
    assert.ok(mask.every((v) => v === 0 || Math.abs(v - 1 / 0.75) < 1e-6));
    const kept = mask.filter((v) => v > 0).length / mask.length;
    assert.ok(Math.abs(kept - 0.75) < 0.02, `kept ${kept}`);
    // Dropout applies in training only: evaluation is deterministic and unaffected.
    const b = batch(1, 6, 1);
    assert.deepEqual(await m.evaluate([b]), await m.evaluate([b]));
    assert.notEqual((await m.forward(b, { train: true })).loss, (await m.forward(b)).loss);
    m.setAdapter(initLora(m.config, { r: 2, alpha: 4, targets: ['q_proj'], seed: 1 }), {
      'model.layers.0.self_attn.q_proj': new Float32Array(16).fill(1),
    });
    await assert.rejects(m.trainStep([b], { lr: 1e-3 }), /DoRA with lora dropout is not supported/);
    assert.throws(() => m.setDropout(1, 0), /dropout must be a number in \[0, 1\)/);
  });

  it('lrLambda follows transformers warmup + cosine/linear', () => {
    const o = { lr: 1, schedule: 'cosine' as const, warmupSteps: 2, totalSteps: 10 };
    assert.equal(lrLambda(o, 0), 0);
    assert.equal(lrLambda(o, 1), 0.5);
    assert.equal(lrLambda(o, 2), 1);
    assert.ok(Math.abs(lrLambda(o, 6) - 0.5) < 1e-12);
    assert.equal(lrLambda(o, 10), 0);
    assert.equal(lrLambda({ ...o, schedule: 'linear' }, 6), 0.5);
    assert.equal(lrLambda({ lr: 1, warmupSteps: 4 }, 9), 1);
  });
});

describe('training engine: packing', () => {
  it('a packed row gives the loss and gradients of its documents run one by one', async () => {
    const m = await TrainModel.load(good);
    const mods = initLora(m.config, { r: 2, alpha: 4, targets: PROJECTIONS, seed: 4 });
    for (const mod of Object.values(mods)) mod.B.fill(0.05);
    m.setAdapter(mods);
    const docs = [batch(1, 5, 1, 1), batch(1, 7, 2, 3), batch(1, 4, 3, 0)];
    const tokens = Int32Array.from(docs.flatMap((d) => Array.from(d.tokens)));
    const labels = Int32Array.from(docs.flatMap((d) => Array.from(d.labels ?? [])));
    const segments = Int32Array.from(docs.flatMap((d, k) => Array.from(d.tokens, () => k)));
    const packed = await m.forward({ tokens, labels, segments, rows: 1, seq: tokens.length }, { logits: true, backward: true });
    const gp = m.gradients();
    let sum = 0;
    let count = 0;
    const acc: Record<string, { A: Float64Array; B: Float64Array }> = {};
    let offset = 0;
    for (const d of docs) {
      const r = await m.forward(d, { logits: true, backward: true });
      // The packed logits of this document equal its own.
      assert.ok(rel(packed.logits?.subarray(offset * 50, (offset + d.seq) * 50) ?? [], r.logits ?? []) < 1e-5);
      offset += d.seq;
      sum += r.loss * r.count;
      count += r.count;
      for (const [path, g] of Object.entries(m.gradients())) {
        const a = acc[path] ?? { A: new Float64Array(g.A.length), B: new Float64Array(g.B.length) };
        acc[path] = a;
        g.A.forEach((v, i) => {
          a.A[i] = (a.A[i] ?? 0) + v * r.count;
        });
        g.B.forEach((v, i) => {
          a.B[i] = (a.B[i] ?? 0) + v * r.count;
        });
      }
    }
    assert.equal(packed.count, count);
    assert.ok(Math.abs(packed.loss - sum / count) < 1e-5 * Math.abs(packed.loss));
    for (const [path, g] of Object.entries(gp)) {
      const want = acc[path];
      assert.ok(want);
      assert.ok(
        rel(
          g.A,
          want.A.map((v) => v / count),
        ) < 1e-5,
        `${path} A`,
      );
      assert.ok(
        rel(
          g.B,
          want.B.map((v) => v / count),
        ) < 1e-5,
        `${path} B`,
      );
    }
    await assert.rejects(
      m.forward({ tokens, segments: segments.reverse(), rows: 1, seq: tokens.length }),
      /segments must be non-decreasing/,
    );
  });
});

describe('training engine: generation', () => {
  it('sampling is reproducible from its seed; top-p near 0 is greedy; eos repeats', async () => {
    const m = await TrainModel.load(good);
    m.setAdapter(initLora(m.config, { r: 2, alpha: 4, targets: ['q_proj', 'v_proj'], seed: 3 }));
    const req = { prompt: Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), rows: 2, maxNewTokens: 12 };
    const greedy = await m.generate(req);
    assert.equal(greedy.length, 24);
    assert.deepEqual(await m.generate(req, { temperature: 1.5, topP: 1e-9, seed: 1 }), greedy);
    const a = await m.generate(req, { temperature: 1.5, seed: 7 });
    assert.deepEqual(await m.generate(req, { temperature: 1.5, seed: 7 }), a);
    assert.notDeepEqual(await m.generate(req, { temperature: 1.5, seed: 8 }), a);
    assert.ok(a.every((t) => t >= 0 && t < cfg.vocab_size));
    // A row that emits eos keeps emitting it.
    const eos = greedy[0] as number;
    const stopped = await m.generate(req, { eos });
    assert.ok(stopped.subarray(0, 12).every((t) => t === eos));
    await assert.rejects(m.generate({ ...req, maxNewTokens: 30 }), /exceeds max_position_embeddings \(32\)/);
  });
});

describe('training engine: determinism', () => {
  it('the same seed and thread count give bit-identical losses and factors', async () => {
    const run = async (threads: number) => {
      setTrainThreads(threads);
      const m = await TrainModel.load(good);
      m.setAdapter(initLora(m.config, { r: 4, alpha: 8, targets: PROJECTIONS, seed: 42 }));
      const losses: number[] = [];
      for (let s = 0; s < 3; s++) {
        const r = await m.trainStep([batch(2, 8, s), batch(1, 5, s + 10)], {
          lr: 0.01,
          weightDecay: 0.1,
          maxGradNorm: 0.5,
          schedule: 'cosine',
          warmupSteps: 1,
          totalSteps: 3,
        });
        losses.push(r.loss, r.gradNorm);
      }
      return { losses, adapter: m.adapter() };
    };
    const initial = trainThreads();
    try {
      for (const threads of [1, 2]) {
        const [x, y] = [await run(threads), await run(threads)];
        assert.deepEqual(x.losses, y.losses, `${threads} threads`);
        for (const [path, mod] of Object.entries(x.adapter)) {
          const other = y.adapter[path];
          assert.ok(other);
          assert.ok(Buffer.from(mod.A.buffer).equals(Buffer.from(other.A.buffer)), `${path} A differs (${threads} threads)`);
          assert.ok(Buffer.from(mod.B.buffer).equals(Buffer.from(other.B.buffer)), `${path} B differs (${threads} threads)`);
          assert.ok(
            mod.B.some((v) => v !== 0),
            `${path} B trained`,
          );
        }
      }
    } finally {
      setTrainThreads(initial);
    }
  });
});

describe('training engine: checkpoints', () => {
  it('resuming from a checkpoint continues the same run bit for bit (LoRA + DoRA, schedule, moments)', async () => {
    const optimizer = { lr: 0.02, weightDecay: 0.1, maxGradNorm: 1.0, schedule: 'cosine' as const, warmupSteps: 1, totalSteps: 4 };
    const data = [0, 1, 2, 3].map((s) => [batch(2, 7, s), batch(1, 9, s + 20)]);
    const fresh = async () => {
      const m = await TrainModel.load(good);
      const modules = initLora(m.config, { r: 3, alpha: 6, targets: ['q_proj', 'v_proj', 'down_proj'], seed: 9 });
      const mags = {
        'model.layers.1.self_attn.q_proj': new Float32Array(16).fill(1.5),
        'model.layers.0.mlp.down_proj': new Float32Array(16).fill(0.8),
      };
      m.setAdapter(modules, mags);
      return m;
    };
    const straight = await fresh();
    const want: number[] = [];
    for (const d of data) want.push((await straight.trainStep(d, optimizer)).loss);

    const first = await fresh();
    for (const d of data.slice(0, 2)) await first.trainStep(d, optimizer);
    const dir = join(work, 'ckpt');
    saveCheckpoint(dir, first.state(), { dataPosition: 2 });
    const { state, meta } = loadCheckpoint(dir);
    assert.equal(state.step, 2);
    const resumed = await TrainModel.load(good);
    resumed.restore(state);
    const got: number[] = [];
    for (const d of data.slice(Number(meta.dataPosition))) got.push((await resumed.trainStep(d, optimizer)).loss);
    assert.deepEqual(got, want.slice(2));
    const [x, y] = [straight.state(), resumed.state()];
    assert.equal(y.step, 4);
    for (const [path, mod] of Object.entries(x.modules)) {
      const other = y.modules[path];
      assert.ok(other);
      assert.ok(Buffer.from(mod.A.buffer).equals(Buffer.from(other.A.buffer)), `${path} A`);
      assert.ok(Buffer.from(mod.B.buffer).equals(Buffer.from(other.B.buffer)), `${path} B`);
    }
    assert.deepEqual(y.magnitudes, x.magnitudes);
    assert.deepEqual(y.moments, x.moments);

    rmSync(join(dir, 'checkpoint.json'));
    assert.throws(
      () => loadCheckpoint(dir),
      (e: unknown) => e instanceof LowrankError && e.code === 'not_found',
    );
  });
});
