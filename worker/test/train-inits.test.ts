/**
 * The train job's data-driven and base-changing inits. LoRA-GA (§1.5): the engine's
 * frozen-weight gradients equal PEFT's preprocess_loraga estimate (rel ≤ 1e-4, §8.1
 * gradients), and from the same G our factors equal PEFT's lora_ga_init (variant peft,
 * exact SVD under the §0.1 sign rule on both sides: A, B and W_res rel ≤ 1e-5, §8.1's
 * singular-vector and low-rank-product tolerances).
 * Jobs (PiSSA exact and randomized, LoRA-GA reference and peft): the base-changing ones (§0.5) train on W_res,
 * its eval loss drops, and the adapter it publishes (rank 2r: A' = [A; A0], B' = [B | −B0])
 * loaded by PeftModel.from_pretrained on the ORIGINAL base gives our engine's logits
 * (rel ≤ 1e-5, f32 both sides), which equal those of the model it trained (W_res + s·BA,
 * rel ≤ 1e-4: the 2r export adds fp32 rounding of W − s·B0A0 + s·B0A0).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { gemm, type LoraModule, philox } from '../src/native/linalg.ts';
import { initLora, PROJECTIONS, type Projection, TrainModel } from '../src/native/train.ts';
import { loadCheckpoint, saveCheckpoint } from '../src/native/train-checkpoint.ts';
import { type EvaBatch, type EvaOptions, evaInit } from '../src/native/train-eva.ts';
import { pissaInit } from '../src/native/train-init.ts';
import { estimateWeightGradients, type LoraGaOptions, loraGaFactors, loraGaInit } from '../src/native/train-lora-ga.ts';
import { exportLoraSb, loraSbFactors } from '../src/native/train-lora-sb.ts';
import { readPeftAdapter } from '../src/peft/adapter-dir.ts';
import { Reporter } from '../src/run/reporter.ts';
import { runTrain } from '../src/run/train-job.ts';
import type { JobOutcome } from '../src/run/types.ts';
import { rel } from './support/numeric.ts';
import { type Entry, loadF32, readJson, runPython, saveF32, writeJson } from './support/python-ref.ts';
import { writeTaskJsonl, writeTinyBase } from './support/tiny-base.ts';

const work = mkdtempSync(join(tmpdir(), 'lowrank-train-inits-'));
after(() => rmSync(work, { recursive: true, force: true }));
const base = join(work, 'base');
const data = join(work, 'task.jsonl');
const targets: Projection[] = ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'];
const tokens = [
  [5, 17, 40, 3, 99, 120, 7, 8],
  [60, 61, 62, 63, 64, 65, 66, 67],
];
const probe = { tokens: Int32Array.from(tokens.flat()), rows: 2, seq: 8 };

before(() => {
  writeTinyBase(base);
  writeTaskJsonl(data, 240, 5);
});

function spec(
  method: Record<string, unknown>,
  seed = 3,
  over: { schedule?: Record<string, unknown>; lr?: number } = {},
): AdapterJobSpecDefaulted {
  return {
    mode: 'train',
    baseModel: { path: base, dtype: 'f32' },
    dataset: { path: data, split: 'train', format: 'auto', evalFraction: 0.1, packing: false, maxSeqLength: 32 },
    method: { rank: 4, alpha: 8, dropout: 0, targetModules: targets, bias: 'none', loraBias: false, init: 'kaiming-uniform', ...method },
    optimizer: { type: 'adamw', lr: over.lr ?? 0.01, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 },
    schedule: over.schedule ?? { type: 'linear', minLrRatio: 0, warmupSteps: 2 },
    training: {
      epochs: 1,
      maxSteps: 30,
      microBatchSize: 8,
      gradientAccumulation: 1,
      evalEvery: 0,
      checkpointEvery: 0,
      logEvery: 10,
      precision: 'f32',
      recompute: false,
      transferable: false,
      seedSamples: 5,
    },
    output: { repository: 'a/b', visibility: 'private' },
    seed,
  } as unknown as AdapterJobSpecDefaulted;
}

const train = (name: string, s: AdapterJobSpecDefaulted): Promise<JobOutcome> =>
  runTrain(s, { client: undefined, reporter: Reporter.create(undefined, undefined), workDir: join(work, name), jobId: undefined });

/** PEFT's logits for the adapter directory on the unmodified base, and ours for the same. */
async function peftAgrees(name: string, dir: string): Promise<Float32Array> {
  const adapter = readPeftAdapter(dir);
  const model = await TrainModel.load(base);
  model.setAdapter(adapter.modules);
  const ours = (await model.forward(probe, { logits: true })).logits;
  assert.ok(ours);
  writeJson(work, 'export.json', { base, adapter: dir, tokens });
  runPython('train_ref.py', 'peft-logits', work);
  const ref = readJson(work, 'export.out.json') as { logits: Entry };
  const e = rel(ours, loadF32(work, ref.logits));
  assert.ok(e <= 1e-5, `${name}: PEFT logits rel ${e}`);
  return ours;
}

function firstHalf(m: LoraModule): LoraModule {
  const r = m.r / 2;
  const B = new Float32Array(m.out * r);
  for (let o = 0; o < m.out; o++) B.set(m.B.subarray(o * m.r, o * m.r + r), o * r);
  return { r, in: m.in, out: m.out, A: m.A.slice(0, r * m.in), B, scale: m.scale };
}

describe('train job: PiSSA', () => {
  for (const pissa of [{ niter: 0 }, { niter: 4, oversampling: 4 }]) {
    it(`${pissa.niter ? 'randomized' : 'exact'} SVD: eval loss drops; PEFT loads the 2r export on the original base with our logits`, async () => {
      const name = `pissa-${pissa.niter}`;
      const out = await train(name, spec({ type: 'pissa', pissa }));
      const m = out.metrics as { evalLoss: number; baseEvalLoss: number };
      assert.ok(m.evalLoss < 0.9 * m.baseEvalLoss, `eval loss ${m.baseEvalLoss} -> ${m.evalLoss}`);
      const config = JSON.parse(readFileSync(join(out.dir, 'adapter_config.json'), 'utf8'));
      assert.equal(config.r, 8);
      assert.equal(config.lora_alpha, 16);
      assert.equal(config.init_lora_weights, true); // PEFT must not redo the SVD on load (§0.3)
      assert.equal(Object.keys(readPeftAdapter(out.dir).modules).length, 2 * targets.length);
      const exported = await peftAgrees(name, out.dir);

      // The model the job trained: W_res from the same init, plus the trained A, B (A' and B''s first halves).
      const trained = await TrainModel.load(base);
      pissaInit(trained, {
        r: 4,
        alpha: 8,
        targets,
        niter: pissa.niter,
        oversample: pissa.oversampling ?? 0,
        seed: 3,
      });
      const adapter = readPeftAdapter(out.dir).modules;
      trained.setAdapter(Object.fromEntries(Object.entries(adapter).map(([p, mod]) => [p, firstHalf(mod)])));
      const onResidual = (await trained.forward(probe, { logits: true })).logits;
      assert.ok(onResidual);
      const e = rel(exported, onResidual);
      assert.ok(e <= 1e-4, `export on W vs trained on W_res: rel ${e}`);
      // and the adapter trained: the export is not the base.
      const plain = await TrainModel.load(base);
      const baseLogits = (await plain.forward(probe, { logits: true })).logits;
      assert.ok(baseLogits && rel(exported, baseLogits) > 1e-3);
      assert.equal(PROJECTIONS.length, 7);
    });
  }
});

describe('LoRA-GA', () => {
  it('estimates the frozen-weight gradients as PEFT preprocess_loraga and builds its factors (variant peft)', async () => {
    const model = await TrainModel.load(base);
    const rows = 2;
    const seq = 8;
    const batches = [0, 1, 2].map((b) => {
      const tokens = Array.from({ length: rows }, (_, i) =>
        Array.from({ length: seq }, (_, t) => (7 + 13 * b + 29 * i + 5 * t * (t + b)) % 120),
      );
      // the first two positions unlabelled, as a prompt
      const labels = tokens.map((row) => row.map((x, t) => (t < 2 ? -100 : x)));
      return { tokens, labels };
    });
    const cases = [
      { id: 'stable', direction: 'ArB2r', scale: 'stable', gamma: 16 },
      { id: 'unit', direction: 'A2rBr', scale: 'unit', gamma: 16 },
      { id: 'gd', direction: 'ArBr', scale: 'gd_scale', gamma: 16 },
      { id: 'wsvd', direction: 'ArB2r', scale: 'weight_svd', gamma: 16 },
      { id: 'gamma4', direction: 'ArB2r', scale: 'stable', gamma: 4 },
    ] as const;
    writeJson(work, 'loraga.json', { base, targets, r: 4, alpha: 8, batches, cases });
    runPython('inits_ref.py', 'loraga', work);
    const ref = readJson(work, 'loraga.out.json') as {
      grads: Record<string, Entry>;
      cases: Record<string, Record<string, { A: Entry; B: Entry; W: Entry }>>;
    };
    const paths = Object.keys(ref.grads);
    assert.equal(paths.length, 2 * targets.length);
    const ours = await estimateWeightGradients(model, paths, batches.length, (i) => {
      const b = batches[i] as { tokens: number[][]; labels: number[][] };
      return { tokens: Int32Array.from(b.tokens.flat()), labels: Int32Array.from(b.labels.flat()), rows, seq };
    });
    for (const p of paths) {
      const e = rel(ours[p] as Float32Array, loadF32(work, ref.grads[p] as Entry));
      assert.ok(e <= 1e-4, `${p}: G rel ${e}`);
    }
    let worst = 0;
    for (const c of cases) {
      const o: LoraGaOptions = {
        r: 4,
        alpha: 8,
        targets,
        direction: c.direction,
        scale: c.scale,
        gamma: c.gamma,
        variant: 'peft',
        seed: 1,
        exactSvd: true,
      };
      for (const p of paths) {
        const r = (ref.cases[c.id] as Record<string, { A: Entry; B: Entry; W: Entry }>)[p];
        assert.ok(r, `${c.id}: PEFT has no module ${p}`);
        const W = model.baseWeight(p);
        const out = r.B.shape[0] as number;
        const inDim = r.A.shape[1] as number;
        const { A, B } = loraGaFactors(loadF32(work, ref.grads[p] as Entry), out, inDim, 4, 2, o, p, W);
        const eA = rel(A, loadF32(work, r.A));
        const eB = rel(B, loadF32(work, r.B));
        assert.ok(eA <= 1e-5 && eB <= 1e-5, `${c.id} ${p}: A rel ${eA}, B rel ${eB}`);
        const ba = gemm({ rows: out, cols: 4, data: B }, { rows: 4, cols: inDim, data: A }, { alpha: 2 }).data;
        const res = W.map((w, i) => w - (ba[i] as number));
        const eW = rel(res, loadF32(work, r.W));
        assert.ok(eW <= 1e-5, `${c.id} ${p}: W_res rel ${eW}`);
        worst = Math.max(worst, eA, eB, eW);
      }
    }
    console.log(JSON.stringify({ event: 'lora-ga-parity', worstRel: worst }));
  });

  it('loraGaInit keeps the model function (W_res + s·BA = W) and refuses what it cannot do', async () => {
    const model = await TrainModel.load(base);
    const before = (await model.forward(probe, { logits: true })).logits as Float32Array;
    const batch = { tokens: probe.tokens, labels: probe.tokens, rows: 2, seq: 8 };
    const o: LoraGaOptions = { r: 4, alpha: 8, targets, direction: 'random', scale: 'stable', gamma: 16, variant: 'reference', seed: 5 };
    const mods = await loraGaInit(model, o, 2, () => batch);
    assert.equal(Object.keys(mods).length, 2 * targets.length);
    const after = (await model.forward(probe, { logits: true })).logits as Float32Array;
    const e = rel(after, before);
    assert.ok(e <= 1e-5, `logits after init rel ${e}`);
    // reference/stable: both factors carry out^(1/4)/sqrt(gamma), A's rows have that norm.
    const q = mods['model.layers.0.self_attn.q_proj'] as LoraModule;
    const f = 32 ** 0.25 / 4;
    for (let i = 0; i < q.r; i++) {
      const n = Math.hypot(...q.A.subarray(i * q.in, (i + 1) * q.in));
      assert.ok(Math.abs(n - f) <= 1e-5 * f, `row ${i} of A has norm ${n}, want ${f}`);
    }
    await assert.rejects(
      loraGaInit(model, { ...o, scale: 'gd_scale' }, 1, () => batch),
      /set loraGa\.variant peft/,
    );
    // A prompt-only batch has no loss: skipped, and alone it is refused.
    const fresh = await TrainModel.load(base);
    const unlabelled = { ...batch, labels: new Int32Array(16).fill(-100) };
    const paths = ['model.layers.0.self_attn.q_proj'];
    const one = await estimateWeightGradients(fresh, paths, 1, () => batch);
    const mixed = await estimateWeightGradients(fresh, paths, 2, (i) => (i === 0 ? unlabelled : batch));
    assert.deepEqual(mixed, one);
    await assert.rejects(
      estimateWeightGradients(fresh, paths, 2, () => unlabelled),
      /none of the 2 gradient-estimation batches has a labelled token/,
    );
    await assert.rejects(
      loraGaInit(model, { ...o, r: 9 }, 1, () => batch),
      /2r = 18 <= min\(out, in\) = 16 at model\.layers\.0\.self_attn\.v_proj/,
    );
  });
});

describe('train job: LoRA-GA', () => {
  for (const variant of ['reference', 'peft'] as const) {
    it(`${variant}: eval loss drops; PEFT loads the 2r export on the original base with our logits`, async () => {
      const name = `lora-ga-${variant}`;
      const loraGa = { direction: 'ArB2r', scale: 'stable', gamma: 16, variant, batches: 4, batchSize: 4 };
      const out = await train(name, spec({ type: 'lora-ga', loraGa }));
      const m = out.metrics as { evalLoss: number; baseEvalLoss: number };
      assert.ok(m.evalLoss < 0.9 * m.baseEvalLoss, `eval loss ${m.baseEvalLoss} -> ${m.evalLoss}`);
      const config = JSON.parse(readFileSync(join(out.dir, 'adapter_config.json'), 'utf8'));
      assert.equal(config.r, 8);
      assert.equal(config.lora_alpha, 16);
      assert.equal(config.init_lora_weights, true); // PEFT's "lora_ga" would re-init without gradients (§0.3)
      const md = out.methodMetadata as { initRecipe: Record<string, unknown> };
      assert.deepEqual(md.initRecipe, { init: 'lora-ga', ...loraGa, seed: 3 });
      const exported = await peftAgrees(name, out.dir);
      const plain = await TrainModel.load(base);
      const baseLogits = (await plain.forward(probe, { logits: true })).logits;
      assert.ok(baseLogits && rel(exported, baseLogits) > 1e-3);
    });
  }
});

describe('EVA', () => {
  it("gives PEFT initialize_lora_eva_weights's ranks, patterns and components (exact IPCA SVD on both sides)", async () => {
    const all = [...PROJECTIONS];
    const rows = 8;
    const seq = 16;
    const batches = Array.from({ length: 12 }, (_, b) => {
      const input_ids: number[][] = [];
      const attention_mask: number[][] = [];
      const labels: number[][] = [];
      for (let i = 0; i < rows; i++) {
        const len = seq - ((b + i) % 4); // right padding
        const ids = Array.from({ length: seq }, (_, t) => (t < len ? (3 + 37 * b + 11 * i + 7 * t + ((b * t * t) % 13)) % 300 : 0));
        input_ids.push(ids);
        attention_mask.push(ids.map((_, t) => (t < len ? 1 : 0)));
        labels.push(ids.map((x, t) => (t >= 3 && t < len ? x : -100))); // a 3-token prompt
      }
      return { input_ids, attention_mask, labels };
    });
    const eva = { rho: 2, tau: 0.9, whiten: false, adjust_scaling_factors: true, use_label_mask: true };
    writeJson(work, 'eva.json', { base, targets: all, r: 4, alpha: 8, eva, batches });
    runPython('inits_ref.py', 'eva', work);
    const ref = readJson(work, 'eva.out.json') as {
      modules: Record<string, { A: Entry }>;
      rank_pattern: Record<string, number>;
      alpha_pattern: Record<string, number>;
      target_modules: string[];
    };
    const model = await TrainModel.load(base);
    const o: EvaOptions = {
      r: 4,
      alpha: 8,
      targets: all,
      rho: 2,
      tau: 0.9,
      whiten: false,
      adjustScalingFactors: true,
      useLabelMask: true,
      seed: 1,
      exactSvd: true,
    };
    const toBatch = (i: number): EvaBatch => {
      const b = batches[i] as (typeof batches)[number];
      return {
        tokens: Int32Array.from(b.input_ids.flat()),
        labels: Int32Array.from(b.labels.flat()),
        attention: Uint8Array.from(b.attention_mask.flat()),
        rows,
        seq,
      };
    };
    const res = await evaInit(model, o, batches.length, 1000, toBatch);
    // Allocation is exact (§8.1): the same ranks, alphas and kept modules.
    assert.deepEqual(res.rankPattern, ref.rank_pattern);
    assert.deepEqual(res.alphaPattern, ref.alpha_pattern);
    assert.deepEqual(Object.keys(res.modules).sort(), [...ref.target_modules].sort());
    assert.ok(
      Object.values(res.rankPattern).some((r) => r !== 4),
      'the test should redistribute ranks',
    );
    let worst = 1;
    for (const [path, r] of Object.entries(ref.modules)) {
      const ours = res.modules[path];
      assert.ok(ours, `no module ${path}`);
      const theirs = loadF32(work, r.A);
      assert.equal(theirs.length, ours.A.length, `${path}: rank`);
      for (let i = 0; i < ours.r; i++) {
        const a = ours.A.subarray(i * ours.in, (i + 1) * ours.in);
        const b = theirs.subarray(i * ours.in, (i + 1) * ours.in);
        let dot = 0;
        for (let j = 0; j < ours.in; j++) dot += (a[j] as number) * (b[j] as number);
        const c = Math.abs(dot) / (Math.hypot(...a) * Math.hypot(...b));
        worst = Math.min(worst, c);
        assert.ok(c >= 1 - 1e-5, `${path} component ${i}: |cos| ${c}`);
      }
      assert.ok(ours.B.every((x) => x === 0));
    }
    console.log(JSON.stringify({ event: 'eva-parity', batches: res.batches, worstCos: worst, rankPattern: res.rankPattern }));
  });
});

describe('train job: EVA', () => {
  it('redistributes ranks, eval loss drops; PEFT loads the adapter with its rank_pattern/alpha_pattern and gives our logits', async () => {
    const name = 'eva';
    const eva = { rho: 2, tau: 0.95, batchSize: 8, batches: 400 };
    const out = await train(name, spec({ type: 'eva', targetModules: [...PROJECTIONS], eva }));
    const m = out.metrics as { evalLoss: number; baseEvalLoss: number };
    assert.ok(m.evalLoss < 0.9 * m.baseEvalLoss, `eval loss ${m.baseEvalLoss} -> ${m.evalLoss}`);
    const config = JSON.parse(readFileSync(join(out.dir, 'adapter_config.json'), 'utf8'));
    const recipe = (out.methodMetadata as { initRecipe: { ranks: Record<string, number>; dropped: string[]; calibrationBatches: number } })
      .initRecipe;
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 8);
    assert.ok(Object.keys(config.rank_pattern).length > 0, 'EVA moved rank between modules');
    const ranks = Object.values(recipe.ranks);
    assert.equal(
      ranks.reduce((a, b) => a + b, 0),
      4 * 14,
      'the budget is the sum of r',
    );
    for (const [path, r] of Object.entries(recipe.ranks)) {
      assert.equal(config.rank_pattern[path] ?? 4, r, path);
      assert.equal(config.alpha_pattern[path] ?? 8, (8 * r) / 4, path); // adjustScalingFactors keeps α/r
    }
    assert.ok(recipe.calibrationBatches >= 2 && recipe.calibrationBatches <= 400);
    if (recipe.dropped.length) assert.deepEqual(config.target_modules, Object.keys(recipe.ranks).sort());
    const adapter = readPeftAdapter(out.dir).modules;
    for (const [path, r] of Object.entries(recipe.ranks)) assert.equal(adapter[path]?.r, r, path);
    const exported = await peftAgrees(name, out.dir);
    const plain = await TrainModel.load(base);
    const baseLogits = (await plain.forward(probe, { logits: true })).logits;
    assert.ok(baseLogits && rel(exported, baseLogits) > 1e-3);
  });
});

describe('LoRA-SB', () => {
  const rows = 2;
  const seq = 8;
  const tokens2 = [
    [5, 17, 40, 3, 99, 120, 7, 8],
    [60, 61, 62, 63, 64, 65, 66, 67],
  ];
  const labels2 = tokens2.map((r) => r.map((x, t) => (t < 2 ? -100 : x)));
  const batch = { tokens: Int32Array.from(tokens2.flat()), labels: Int32Array.from(labels2.flat()), rows, seq };
  const r = 4;
  const scale = 1.5;
  /** Seeded random A, B, R on every target (B, R non-zero: METHODS §1 parity rule). */
  async function sbModel(): Promise<{ model: TrainModel; mods: Record<string, LoraModule>; cores: Record<string, Float32Array> }> {
    const model = await TrainModel.load(base);
    const mods: Record<string, LoraModule> = {};
    const cores: Record<string, Float32Array> = {};
    const layout = initLora(model.config, { r, alpha: 8, targets, seed: 1 });
    let k = 0;
    for (const [p, m] of Object.entries(layout)) {
      const n = (len: number, sd: number) => Float32Array.from(philox(11, 100 + k++, len, 'normal'), (x) => x * sd);
      mods[p] = { ...m, A: n(m.r * m.in, 0.2), B: n(m.out * m.r, 0.2), scale };
      cores[p] = n(m.r * m.r, 0.5);
    }
    model.setAdapter(mods, {}, cores);
    return { model, mods, cores };
  }

  it("the core R: loss, logits and dL/dR equal a PyTorch replica's autograd; the init equals [ref]'s exact-SVD factors", async () => {
    const { model, mods, cores } = await sbModel();
    const fwd = await model.forward(batch, { logits: true, backward: true });
    const g = model.gradients();
    // the update estimate, from our frozen-weight gradients (their parity with autograd: the LoRA-GA test)
    const plain = await TrainModel.load(base);
    const G = await estimateWeightGradients(plain, Object.keys(mods), 1, () => batch);
    const dW: Record<string, Entry> = {};
    for (const [p, v] of Object.entries(G))
      dW[p] = saveF32(
        work,
        `sb.dW.${p}`,
        Float32Array.from(v, (x) => -1e-3 * Math.sign(x)),
        [(mods[p] as LoraModule).out, (mods[p] as LoraModule).in],
      );
    const modules = Object.fromEntries(
      Object.entries(mods).map(([p, m]) => [
        p,
        {
          A: saveF32(work, `sb.${p}.A`, m.A, [m.r, m.in]),
          B: saveF32(work, `sb.${p}.B`, m.B, [m.out, m.r]),
          R: saveF32(work, `sb.${p}.R`, cores[p] as Float32Array, [m.r, m.r]),
        },
      ]),
    );
    writeJson(work, 'lorasb.json', { base, modules, scale, tokens: tokens2, labels: labels2, dW, r });
    runPython('inits_ref.py', 'lorasb', work);
    const ref = readJson(work, 'lorasb.out.json') as {
      loss: number;
      logits: Entry;
      gradR: Record<string, Entry>;
      init: Record<string, { BRA: Entry; S: Entry }>;
    };
    assert.ok(Math.abs(fwd.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${fwd.loss} vs ${ref.loss}`);
    const eL = rel(fwd.logits as Float32Array, loadF32(work, ref.logits));
    assert.ok(eL <= 1e-5, `logits rel ${eL}`);
    for (const p of Object.keys(mods)) {
      const e = rel(g[p]?.R as Float32Array, loadF32(work, ref.gradR[p] as Entry));
      assert.ok(e <= 2e-5, `${p}: dL/dR rel ${e}`); // §8.1 LoRA backward
      assert.ok(g[p]?.A.length === 0 && g[p]?.B.length === 0, 'A and B are frozen: no gradients');
      // init: B R A = [ref]'s exact-SVD B R A (sign-free), σ within 1e-5·σ1
      const m = mods[p] as LoraModule;
      const dw = loadF32(work, dW[p] as Entry);
      const f = loraSbFactors(dw, m.out, m.in, r, { niter: 0, seed: 1, exactSvd: true }, p);
      const bra = gemm({ rows: m.out, cols: r, data: f.B }, gemm({ rows: r, cols: r, data: f.R }, { rows: r, cols: m.in, data: f.A }));
      const eI = rel(bra.data, loadF32(work, (ref.init[p] as { BRA: Entry }).BRA));
      assert.ok(eI <= 1e-5, `${p}: B R A rel ${eI}`);
      const S = loadF32(work, (ref.init[p] as { S: Entry }).S);
      for (let i = 0; i < r; i++) assert.ok(Math.abs((f.R[i * r + i] as number) - (S[i] as number)) <= 1e-5 * (S[0] as number));
    }
  });

  it('under LoRA dropout (our masks injected into the replica): loss and dL/dR equal autograd', async () => {
    const { model, mods, cores } = await sbModel();
    model.setDropout(0.2, 9);
    const fwd = await model.forward(batch, { logits: true, backward: true, train: true });
    const g = model.gradients();
    const modules = Object.fromEntries(
      Object.entries(mods).map(([p, m]) => [
        p,
        {
          A: saveF32(work, `sbd.${p}.A`, m.A, [m.r, m.in]),
          B: saveF32(work, `sbd.${p}.B`, m.B, [m.out, m.r]),
          R: saveF32(work, `sbd.${p}.R`, cores[p] as Float32Array, [m.r, m.r]),
          mask: saveF32(work, `sbd.${p}.mask`, model.dropoutMask(p, 0, 0, rows * seq), [rows * seq, m.in]),
        },
      ]),
    );
    writeJson(work, 'lorasb.json', { base, modules, scale, tokens: tokens2, labels: labels2, r });
    runPython('inits_ref.py', 'lorasb', work);
    const ref = readJson(work, 'lorasb.out.json') as { loss: number; logits: Entry; gradR: Record<string, Entry> };
    assert.ok(Math.abs(fwd.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${fwd.loss} vs ${ref.loss}`);
    const eL = rel(fwd.logits as Float32Array, loadF32(work, ref.logits));
    assert.ok(eL <= 1e-5, `logits rel ${eL}`);
    for (const p of Object.keys(mods)) {
      const e = rel(g[p]?.R as Float32Array, loadF32(work, ref.gradR[p] as Entry));
      assert.ok(e <= 2e-5, `${p}: dL/dR rel ${e}`);
    }
  });

  it('trains only R; a checkpoint resumes the same steps; the plain-LoRA export (lora_A = R A) gives the same logits', async () => {
    const opt = { lr: 0.01, weightDecay: 0.01, maxGradNorm: 1 };
    const a = await sbModel();
    const b = await sbModel();
    await a.model.trainStep([batch], opt);
    await b.model.trainStep([batch], opt);
    const dir = join(work, 'sb-ckpt');
    saveCheckpoint(dir, a.model.state());
    const c = await TrainModel.load(base);
    c.restore(loadCheckpoint(dir).state);
    const la = await a.model.trainStep([batch], opt);
    const lc = await c.trainStep([batch], opt);
    assert.equal(lc.loss, la.loss);
    assert.deepEqual(c.cores(), a.model.cores());
    for (const [p, m] of Object.entries(a.model.adapter())) {
      assert.deepEqual(m.A, (b.mods[p] as LoraModule).A, 'A frozen');
      assert.deepEqual(m.B, (b.mods[p] as LoraModule).B, 'B frozen');
      assert.notDeepEqual(a.model.cores()[p], b.cores[p], 'R trained');
    }
    const ours = (await a.model.forward(probe, { logits: true })).logits as Float32Array;
    const plainModel = await TrainModel.load(base);
    plainModel.setAdapter(exportLoraSb(a.model.adapter(), a.model.cores()));
    const exported = (await plainModel.forward(probe, { logits: true })).logits as Float32Array;
    const e = rel(exported, ours);
    assert.ok(e <= 1e-5, `export logits rel ${e}`);
  });
});

describe('train job: LoRA-SB', () => {
  it('trains the core only, eval loss drops below the bare base; PEFT loads the plain-LoRA export (α = r) with our logits', async () => {
    const name = 'lora-sb';
    const out = await train(
      name,
      spec({ type: 'lora-sb', rank: 4, useRslora: true, loraSb: { samples: 16, niter: 4 } }, 3, {
        schedule: { type: 'linear', minLrRatio: 0, warmupSteps: 3 },
        lr: 0.02,
      }),
    );
    const m = out.metrics as { evalLoss: number; baseEvalLoss: number; lossCurve: { step: number; evalLoss?: number }[] };
    assert.ok(m.evalLoss < 0.9 * m.baseEvalLoss, `eval loss ${m.baseEvalLoss} -> ${m.evalLoss}`);
    // step 0 of the curve is the init (W + B R A), not the bare base
    assert.notEqual(m.lossCurve[0]?.evalLoss, m.baseEvalLoss);
    const config = JSON.parse(readFileSync(join(out.dir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 4);
    assert.equal(config.use_rslora, false); // the export is at scale 1 whatever the job said
    const md = out.methodMetadata as { initRecipe: Record<string, unknown> };
    assert.deepEqual(md.initRecipe, { init: 'lora-sb', samples: 16, niter: 4, lr0: 0.02 / 3, seed: 3 });
    const exported = await peftAgrees(name, out.dir);
    const plain = await TrainModel.load(base);
    const baseLogits = (await plain.forward(probe, { logits: true })).logits;
    assert.ok(baseLogits && rel(exported, baseLogits) > 1e-3);
  });

  it('refuses a run without warmup (no first-step learning rate to estimate the update with)', async () => {
    await assert.rejects(
      train('lora-sb-nowarmup', spec({ type: 'lora-sb', rank: 4 }, 3, { schedule: { type: 'linear', minLrRatio: 0, warmupSteps: 0 } })),
      /spec\.method: the first warmup step has no learning rate: LoRA-SB needs a warmup/,
    );
  });
});
