/**
 * The CUDA device engine against the CPU engine, run by device-engine.test.ts in a child
 * process whose backend is the CUDA library (the emulated one here: LOWRANK_BACKEND=cuda,
 * LOWRANK_CUDA_LIBRARY). Fails, never skips, when the backend is not CUDA. Per shape of
 * device-shapes.ts: one step's loss, gradient norm and every LoRA gradient (METHODS §8.1:
 * loss rel ≤ 1e-5, gradients rel ≤ 2e-5), then 3 AdamW steps with gradient accumulation,
 * clipping, weight decay, a warmup/cosine schedule and LoRA dropout: every loss and the
 * final A, B and moments (rel ≤ 1e-5; METHODS allows 1e-4 per step over 10 steps), and the
 * evaluation loss (which runs on the device) after them. Prints each measured error as a `# measured` TAP comment.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { backendInfo } from '../../src/native/backend.ts';
import { philox } from '../../src/native/linalg.ts';
import { type OptimizerOptions, type TokenBatch, TrainModel } from '../../src/native/train.ts';
import { DEVICE_SHAPES, DEVICE_VOCAB, type DeviceShape, deviceAdapter, writeDeviceShape } from './device-shapes.ts';

const dir = mkdtempSync(join(tmpdir(), 'lowrank-device-engine-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** METHODS §8.1 rel: ‖x − y‖_F / ‖y‖_F. */
function rel(x: Float32Array | number[], y: Float32Array | number[]): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < y.length; i++) {
    d += ((x[i] as number) - (y[i] as number)) ** 2;
    n += (y[i] as number) ** 2;
  }
  assert.equal(x.length, y.length, 'lengths differ');
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30);
}

function measured(what: string, v: number): void {
  console.log(`# measured ${what}: ${v.toExponential(2)}`);
}

/** rows × 16 tokens; some labels -100; row 0 packs two documents (segments) when `pack`. */
function batch(seed: number, stream: number, rows: number, pack: boolean): TokenBatch {
  const T = 16;
  const u = philox(seed, stream, rows * T, 'uniform') as Float32Array;
  const tokens = Int32Array.from(u, (x) => Math.floor(x * DEVICE_VOCAB));
  const labels = Int32Array.from(tokens, (t, i) => (i % 7 === 3 ? -100 : t));
  const segments = Int32Array.from(tokens, (_, i) => (pack && i < T && i >= 9 ? 1 : 0));
  return { tokens, labels, rows, seq: T, ...(pack ? { segments } : {}) };
}

async function pair(shape: DeviceShape, seed: number): Promise<[TrainModel, TrainModel]> {
  const path = writeDeviceShape(dir, shape, seed);
  const cpu = await TrainModel.load(path);
  const dev = await TrainModel.load(path);
  const c = cpu.config;
  const dims = (proj: string): [number, number] => {
    const q = c.numHeads * c.headDim;
    const kv = c.numKvHeads * c.headDim;
    const io: Record<string, [number, number]> = {
      q_proj: [c.hiddenSize, q],
      k_proj: [c.hiddenSize, kv],
      v_proj: [c.hiddenSize, kv],
      o_proj: [q, c.hiddenSize],
      gate_proj: [c.hiddenSize, c.intermediateSize],
      up_proj: [c.hiddenSize, c.intermediateSize],
      down_proj: [c.intermediateSize, c.hiddenSize],
    };
    return io[proj] as [number, number];
  };
  const adapter = deviceAdapter(shape, dims, seed + 100);
  cpu.setAdapter(adapter);
  dev.setAdapter(adapter);
  assert.deepEqual(await dev.useDevice(), { engine: 'cuda', precision: 'f32' });
  return [cpu, dev];
}

test('the backend is CUDA (the device engine is what runs)', () => {
  const info = backendInfo();
  assert.equal(info.backend, 'cuda', `LOWRANK_BACKEND=cuda with a CUDA library is required: ${info.reason ?? ''}`);
});

for (const [k, shape] of DEVICE_SHAPES.entries()) {
  const seed = 40 + k;
  test(`${shape.id}: one step's loss, gradient norm and every LoRA gradient equal the CPU engine's`, async () => {
    const [cpu, dev] = await pair(shape, seed);
    const opt: OptimizerOptions = { lr: 1e-3 };
    const micro = [batch(seed, 1, 2, shape.id === 'llama')];
    const a = await cpu.trainStep(micro, opt);
    const b = await dev.trainStep(micro, opt);
    assert.equal(a.engine, 'cpu');
    assert.equal(b.engine, 'cuda');
    assert.equal(b.tokens, a.tokens);
    const lossRel = Math.abs(b.loss - a.loss) / a.loss;
    const normRel = Math.abs(b.gradNorm - a.gradNorm) / a.gradNorm;
    measured(`${shape.id} loss rel`, lossRel);
    measured(`${shape.id} grad norm rel`, normRel);
    assert.ok(lossRel <= 1e-5, `loss ${b.loss} vs ${a.loss}`);
    assert.ok(normRel <= 2e-5, `grad norm ${b.gradNorm} vs ${a.gradNorm}`);
    const ga = cpu.gradients();
    const gb = dev.gradients();
    assert.deepEqual(Object.keys(gb).sort(), Object.keys(ga).sort());
    let worst = 0;
    for (const [m, g] of Object.entries(ga)) {
      const h = gb[m];
      assert.ok(h, m);
      for (const f of ['A', 'B'] as const) {
        const e = rel(h[f], g[f]);
        worst = Math.max(worst, e);
        assert.ok(e <= 2e-5, `${m}.${f}: gradient rel ${e}`);
      }
    }
    measured(`${shape.id} worst gradient rel`, worst);
  });

  test(`${shape.id}: 3 AdamW steps (accumulation, clipping, decay, schedule, dropout) end where the CPU's do`, async () => {
    const [cpu, dev] = await pair(shape, seed);
    for (const m of [cpu, dev]) m.setDropout(0.1, 7 + k);
    const opt: OptimizerOptions = {
      lr: 2e-3,
      weightDecay: 0.01,
      maxGradNorm: 0.05,
      schedule: 'cosine',
      warmupSteps: 1,
      totalSteps: 3,
    };
    let worstLoss = 0;
    for (let s = 0; s < 3; s++) {
      const micro = [batch(seed, 10 + 2 * s, 1, false), batch(seed, 11 + 2 * s, 2, shape.id === 'llama')];
      const a = await cpu.trainStep(micro, opt);
      const b = await dev.trainStep(micro, opt);
      assert.equal(b.engine, 'cuda');
      assert.ok(a.gradNorm > 0.05, 'the clip is active');
      assert.equal(b.lr, a.lr);
      assert.equal(b.step, a.step);
      const e = Math.abs(b.loss - a.loss) / a.loss;
      worstLoss = Math.max(worstLoss, e);
      assert.ok(e <= 1e-5, `step ${s}: loss ${b.loss} vs ${a.loss}`);
    }
    measured(`${shape.id} 3-step worst loss rel`, worstLoss);
    // Evaluation of the trained adapter runs on the device engine (no copy back).
    const held = [batch(seed, 30, 2, false), batch(seed, 31, 1, shape.id === 'llama')];
    const ea = await cpu.evaluate(held);
    const eb = await dev.evaluate(held);
    assert.equal(ea.engine, 'cpu');
    assert.equal(eb.engine, 'cuda');
    assert.equal(eb.tokens, ea.tokens);
    const evalRel = Math.abs(eb.loss - ea.loss) / ea.loss;
    measured(`${shape.id} eval loss rel after 3 steps`, evalRel);
    assert.ok(evalRel <= 1e-5, `eval loss ${eb.loss} vs ${ea.loss}`);
    const sa = cpu.state();
    const sb = dev.state();
    assert.equal(sb.step, 3);
    let worst = 0;
    for (const [m, x] of Object.entries(sa.modules)) {
      const y = sb.modules[m];
      assert.ok(y, m);
      for (const [f, v] of [
        ['A', rel(y.A, x.A)],
        ['B', rel(y.B, x.B)],
        ['expAvgA', rel(sb.moments[m]?.expAvgA ?? [], sa.moments[m]?.expAvgA ?? [])],
        ['expAvgSqB', rel(sb.moments[m]?.expAvgSqB ?? [], sa.moments[m]?.expAvgSqB ?? [])],
      ] as const) {
        worst = Math.max(worst, v);
        assert.ok(v <= 1e-5, `${m}.${f}: rel ${v} after 3 steps`);
      }
    }
    measured(`${shape.id} 3-step worst parameter/moment rel`, worst);
  });
}

test('activation recomputation on the device: the same bytes as without, the CPU engine within tolerance', async () => {
  const shape = DEVICE_SHAPES[0] as DeviceShape;
  const [cpu, dev] = await pair(shape, 80);
  const [, devR] = await pair(shape, 80);
  devR.setRecompute(true);
  for (const m of [cpu, dev, devR]) m.setDropout(0.2, 3);
  const micro = [batch(80, 1, 2, true)];
  const opt: OptimizerOptions = { lr: 1e-3, maxGradNorm: 1 };
  const a = await cpu.trainStep(micro, opt);
  const b = await dev.trainStep(micro, opt);
  const r = await devR.trainStep(micro, opt);
  assert.equal(r.engine, 'cuda');
  assert.equal(r.loss, b.loss);
  assert.equal(r.gradNorm, b.gradNorm);
  const [ga, gb, gr] = [cpu.gradients(), dev.gradients(), devR.gradients()];
  for (const [m, g] of Object.entries(gb)) {
    assert.deepEqual(gr[m]?.A, g.A, `${m}.A differs under recomputation`);
    assert.deepEqual(gr[m]?.B, g.B, `${m}.B differs under recomputation`);
    const e = Math.max(rel(g.A, ga[m]?.A ?? []), rel(g.B, ga[m]?.B ?? []));
    assert.ok(e <= 2e-5, `${m}: gradient rel ${e}`);
  }
  assert.ok(Math.abs(r.loss - a.loss) / a.loss <= 1e-5);
});

/**
 * 3 AdamW steps of both engines on micro(step): every loss within rel 1e-5 (the worst is
 * answered); after step 0 the grad norm is measured and `gradients` checks the rest.
 */
async function threeSteps(
  cpu: TrainModel,
  dev: TrainModel,
  opt: OptimizerOptions,
  micro: (step: number) => TokenBatch[],
  tag: string,
  gradients: () => void,
): Promise<number> {
  let worst = 0;
  for (let step = 0; step < 3; step++) {
    const a = await cpu.trainStep(micro(step), opt);
    const b = await dev.trainStep(micro(step), opt);
    assert.equal(b.engine, 'cuda');
    const e = Math.abs(b.loss - a.loss) / a.loss;
    assert.ok(e <= 1e-5, `step ${step}: loss ${b.loss} vs ${a.loss}`);
    worst = Math.max(worst, e);
    if (step > 0) continue;
    measured(`${tag} grad norm rel`, Math.abs(b.gradNorm - a.gradNorm) / a.gradNorm);
    gradients();
  }
  return worst;
}

/** DoRA magnitudes near ‖W + s·BA‖ per row (so m/n ≠ 1 and dm is non-trivial). */
function magnitudes(model: TrainModel, seed: number): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  let stream = 1;
  for (const [path, m] of Object.entries(model.adapter())) {
    const W = model.baseWeight(path);
    const u = philox(seed, stream++, m.out, 'uniform') as Float32Array;
    out[path] = Float32Array.from({ length: m.out }, (_, o) => {
      let ss = 0;
      for (let j = 0; j < m.in; j++) {
        let ba = 0;
        for (let k = 0; k < m.r; k++) ba += (m.B[o * m.r + k] as number) * (m.A[k * m.in + j] as number);
        ss += ((W[o * m.in + j] as number) + m.scale * ba) ** 2;
      }
      return Math.sqrt(ss) * (0.8 + 0.4 * (u[o] as number));
    });
  }
  return out;
}

for (const dropout of [0, 0.15]) {
  const what = dropout > 0 ? `DoRA with LoRA dropout ${dropout} (PEFT's W·drop(x) path)` : 'DoRA';
  const tag = dropout > 0 ? 'dora+dropout' : 'dora';
  test(`${what} (qwen2 shape, biases): the gradients of one step (A, B, magnitude) and 3 AdamW steps equal the CPU engine`, async () => {
    const shape = DEVICE_SHAPES[1] as DeviceShape;
    const [cpu, dev] = await pair(shape, 70);
    const mags = magnitudes(cpu, 71);
    await dev.releaseDevice();
    for (const m of [cpu, dev]) {
      m.setAdapter(m.adapter(), mags);
      if (dropout > 0) m.setDropout(dropout, 72);
    }
    assert.deepEqual(await dev.useDevice(), { engine: 'cuda', precision: 'f32' });
    const opt: OptimizerOptions = { lr: 2e-3, maxGradNorm: 0.05, weightDecay: 0.01, schedule: 'linear', totalSteps: 3 };
    const worst = await threeSteps(
      cpu,
      dev,
      opt,
      (step) => [batch(70, 1 + step, 2, false)],
      tag,
      () => {
        const [ga, gb] = [cpu.gradients(), dev.gradients()];
        let g = 0;
        for (const [m, x] of Object.entries(ga)) {
          const y = gb[m];
          assert.ok(y?.magnitude && x.magnitude, `${m}: no magnitude gradient`);
          for (const v of [rel(y.A, x.A), rel(y.B, x.B), rel(y.magnitude, x.magnitude)]) {
            g = Math.max(g, v);
            assert.ok(v <= 2e-5, `${m}: gradient rel ${v}`);
          }
        }
        measured(`${tag} worst gradient rel (A, B, magnitude)`, g);
      },
    );
    measured(`${tag} 3-step worst loss rel`, worst);
    const [ma, mb] = [cpu.magnitudes(), dev.magnitudes()];
    let p = 0;
    for (const [m, x] of Object.entries(cpu.adapter())) {
      const y = dev.adapter()[m];
      assert.ok(y);
      for (const v of [rel(y.A, x.A), rel(y.B, x.B), rel(mb[m] ?? [], ma[m] ?? [])]) {
        p = Math.max(p, v);
        assert.ok(v <= 1e-5, `${m}: rel ${v} after 3 steps`);
      }
    }
    measured(`${tag} 3-step worst parameter rel`, p);
  });
}

/** LoRA-SB cores R [r, r] (random, O(1)) for every module. */
function cores(model: TrainModel, seed: number): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  let stream = 1;
  for (const [path, m] of Object.entries(model.adapter()))
    out[path] = Float32Array.from(philox(seed, stream++, m.r * m.r, 'normal') as Float32Array, (x) => 0.5 * x);
  return out;
}

for (const dropout of [0, 0.15]) {
  const tag = dropout > 0 ? 'lora-sb+dropout' : 'lora-sb';
  test(`LoRA-SB${dropout > 0 ? ` with LoRA dropout ${dropout}` : ''} (llama shape): R's gradients of one step and 3 AdamW steps equal the CPU engine; A and B stay frozen`, async () => {
    const shape = DEVICE_SHAPES[0] as DeviceShape;
    const [cpu, dev] = await pair(shape, 80);
    const rs = cores(cpu, 81);
    await dev.releaseDevice();
    for (const m of [cpu, dev]) {
      m.setAdapter(m.adapter(), {}, rs);
      if (dropout > 0) m.setDropout(dropout, 82);
    }
    const frozen = dev.adapter();
    assert.deepEqual(await dev.useDevice(), { engine: 'cuda', precision: 'f32' });
    const opt: OptimizerOptions = { lr: 5e-3, maxGradNorm: 0.5, weightDecay: 0.01, schedule: 'cosine', warmupSteps: 1, totalSteps: 3 };
    const micro = (step: number) => [batch(80, 1 + step, 2, false), batch(80, 11 + step, 1, false)];
    const worst = await threeSteps(cpu, dev, opt, micro, tag, () => {
      const [ga, gb] = [cpu.gradients(), dev.gradients()];
      let g = 0;
      for (const [m, x] of Object.entries(ga)) {
        assert.ok(x.R && gb[m]?.R, `${m}: no core gradient`);
        const v = rel(gb[m]?.R ?? [], x.R);
        g = Math.max(g, v);
        assert.ok(v <= 2e-5, `${m}: R gradient rel ${v}`);
      }
      measured(`${tag} worst R gradient rel`, g);
    });
    measured(`${tag} 3-step worst loss rel`, worst);
    const [ca, cb] = [cpu.cores(), dev.cores()];
    let p = 0;
    for (const [m, x] of Object.entries(ca)) {
      const v = rel(cb[m] ?? [], x);
      p = Math.max(p, v);
      assert.ok(v <= 1e-5, `${m}: R rel ${v} after 3 steps`);
      assert.ok(rel(x, rs[m] ?? []) > 1e-4, `${m}: R did not train`);
      assert.deepEqual(dev.adapter()[m]?.A, frozen[m]?.A, `${m}: A changed`);
      assert.deepEqual(dev.adapter()[m]?.B, frozen[m]?.B, `${m}: B changed`);
    }
    measured(`${tag} 3-step worst R rel`, p);
  });
}

test("generation on the device (KV caches, every shape; greedy and temperature + top-p, left padding, EOS) gives the CPU engine's tokens", async () => {
  let total = 0;
  for (const shape of DEVICE_SHAPES) {
    const [cpu, dev] = await pair(shape, 60);
    // After a step, so the adapter is trained (and the device holds the newer copy).
    const micro = [batch(60, 1, 2, false)];
    await cpu.trainStep(micro, { lr: 5e-3 });
    await dev.trainStep(micro, { lr: 5e-3 });
    const rows = 3;
    const prompt = Int32Array.from(philox(61, 1, rows * 6, 'uniform') as Float32Array, (x) => Math.floor(x * DEVICE_VOCAB));
    const req = { prompt, rows, maxNewTokens: 9, leftPad: [0, 2, 5] };
    for (const o of [{}, { temperature: 0.9, topP: 0.85, seed: 5 }, { temperature: 1.3, topP: 1, seed: 9, eos: 3 }]) {
      const a = await cpu.generate(req, o);
      const b = await dev.generate(req, o);
      assert.equal(cpu.generateEngine, 'cpu');
      assert.equal(dev.generateEngine, 'cuda', `${shape.id}: the device did not generate`);
      assert.deepEqual(Array.from(b), Array.from(a), `${shape.id} ${JSON.stringify(o)}: tokens differ`);
      total += a.length;
    }
    // Unpadded prompts of another batch size reuse the engine (caches sized per call).
    const one = { prompt: prompt.slice(0, 6), rows: 1, maxNewTokens: 4 };
    assert.deepEqual(Array.from(await dev.generate(one)), Array.from(await cpu.generate(one)), `${shape.id}: one row`);
    // Training goes on after generation (the activations are resized back).
    const c2 = await cpu.trainStep(micro, { lr: 5e-3 });
    const d2 = await dev.trainStep(micro, { lr: 5e-3 });
    assert.equal(d2.engine, 'cuda');
    assert.ok(Math.abs(d2.loss - c2.loss) / c2.loss <= 1e-5, `${shape.id}: the step after generation`);
  }
  console.log(`# measured generation: ${total} tokens, all equal to the CPU engine's`);
});

test('bf16 matmul: runs on cuBLAS with a bf16 checkpoint, within bf16 tolerance of the CPU; else f32, equal', async () => {
  const onCublas = (backendInfo().gemm ?? '').startsWith('cuBLAS');
  // SmolLM's weights are bf16: its GEMMs take bf16 inputs. Llama's are fp32: nothing to round.
  for (const shape of DEVICE_SHAPES.filter((s) => s.id === 'smollm' || s.id === 'llama')) {
    const [cpu, dev] = await pair(shape, 70);
    const expect = onCublas && shape.bf16 === true ? 'bf16' : 'f32';
    assert.deepEqual(await dev.useDevice('bf16'), { engine: 'cuda', precision: expect }, shape.id);
    const micro = [batch(70, 1, 2, false)];
    const a = await cpu.trainStep(micro, { lr: 1e-3 });
    const b = await dev.trainStep(micro, { lr: 1e-3 });
    const lossRel = Math.abs(b.loss - a.loss) / a.loss;
    let worst = 0;
    const ga = cpu.gradients();
    const gb = dev.gradients();
    for (const [m, g] of Object.entries(ga)) for (const f of ['A', 'B'] as const) worst = Math.max(worst, rel(gb[m]?.[f] ?? [], g[f]));
    measured(`${shape.id} ${expect} matmul loss rel`, lossRel);
    measured(`${shape.id} ${expect} matmul worst gradient rel`, worst);
    if (expect === 'bf16') {
      // METHODS §8.1 bf16 paths: loss rel ≤ 2e-2; gradients (ours: every bf16-weight GEMM of the
      // forward and backward rounds its input, measured 2.0e-2) rel ≤ 5e-2; and not the fp32 result.
      assert.ok(lossRel <= 2e-2 && worst <= 5e-2, `loss rel ${lossRel}, gradient rel ${worst}`);
      assert.ok(worst > 1e-5, `gradient rel ${worst}: the bf16 matmul did not change the result`);
    } else {
      assert.ok(lossRel <= 1e-5 && worst <= 2e-5, `loss rel ${lossRel}, gradient rel ${worst}`);
    }
    // Back to fp32: the device engine equals the CPU again.
    assert.deepEqual(await dev.useDevice('f32'), { engine: 'cuda', precision: 'f32' });
    await assert.rejects(dev.useDevice('fp16' as 'f32'), /precision must be "f32" or "bf16", got "fp16"/);
  }
});

test('a refused feature keeps the CPU engine and names itself; a later unsupported adapter fails the step', async () => {
  const shape = DEVICE_SHAPES[0] as DeviceShape;
  const [, dev] = await pair(shape, 90);
  await dev.releaseDevice();
  const mods = dev.adapter();
  const name = Object.keys(mods)[0] as string;
  // Frozen-weight gradient capture (LoRA-GA's and LoRA-SB's inits) while it is on.
  dev.captureWeightGradient(name, true);
  const cap = await dev.useDevice();
  assert.equal(cap.engine, 'cpu');
  assert.match(
    (cap as { reason: string }).reason,
    /^frozen-weight gradient capture \(LoRA-GA \/ LoRA-SB inits\) runs on the CPU engine \(model\.layers\.0\./,
  );
  assert.equal((await dev.trainStep([batch(90, 1, 1, false)], { lr: 1e-3 })).engine, 'cpu');
  dev.captureWeightGradient(name, false);
  // On the device, then capture switched on: the step says why instead of training something else.
  assert.deepEqual(await dev.useDevice(), { engine: 'cuda', precision: 'f32' });
  dev.captureWeightGradient(name, true);
  await assert.rejects(dev.trainStep([batch(90, 1, 1, false)], { lr: 1e-3 }), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'invalid_request');
    assert.match(e.message, /^the CUDA engine cannot train this adapter: frozen-weight gradient capture/);
    return true;
  });
});
