/**
 * Dense compressions against PyTorch/numpy (worker/test/python/compress_ref.py):
 *   EoRA vs a replica of NVlabs/EoRA (fp64 eigh, floored λ): B·A rel ≤ 1e-5 when the gap at
 *     the cut ≥ 1e-3·σ1 (METHODS §8.1 "EoRA factors"), and its calibration error never above
 *     the plain-SVD (LoRC) baseline's;
 *   CUR: DEIM row/column indices exact, C·U·R rel ≤ 1e-4 (pseudo-inverses of fp32 C, R);
 *   int8 adapters: the file our writer produces, read by the safetensors library: I8 values
 *     and scales bit-identical to torch's round(x / (amax/127)), dequantized q·scale equal to
 *     ours entry for entry, and within half a quantization step of the original.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { curDecompose, eora, rtnQuantize } from '../src/native/compress-base.ts';
import { gemm, type LoraModule, type Matrix, philox } from '../src/native/linalg.ts';
import { readQuantizedAdapter, writeQuantizedAdapter } from '../src/peft/quantized-adapter.ts';
import { delta64, rel } from './support/numeric.ts';
import { type Entry, loadF32, readJson, runPython, saveF32, writeJson } from './support/python-ref.ts';

const work = mkdtempSync(join(tmpdir(), 'lowrank-compress-base-'));
after(() => rmSync(work, { recursive: true, force: true }));

let streamNo = 100;
const dense = (rows: number, cols: number, scale = 1): Matrix => ({
  rows,
  cols,
  data: (philox(13, streamNo++, rows * cols, 'normal') as Float32Array).map((v) => v * scale),
});

describe('dense compressions match PyTorch/numpy', () => {
  const OUT = 24;
  const IN = 40;
  const w = dense(OUT, IN);
  const wHat = rtnQuantize(w, 4, 16);
  const delta: Matrix = { rows: OUT, cols: IN, data: w.data.map((v, i) => v - (wHat.data[i] as number)) };
  // correlated calibration inputs: X = Z M
  const x = gemm(dense(64, IN), dense(IN, IN, 0.5));
  // nearly low-rank W for CUR
  const lowRank = gemm(dense(OUT, 6), dense(6, IN));
  const wc: Matrix = { rows: OUT, cols: IN, data: lowRank.data.map((v, i) => v + 0.01 * (dense(1, 1).data[0] as number) * (i % 3)) };
  const colw = (philox(13, streamNo++, IN, 'uniform') as Float32Array).map((u) => 0.5 + u);
  const modules: Record<string, LoraModule> = {
    'model.layers.0.self_attn.q_proj': { r: 4, in: IN, out: OUT, A: dense(4, IN).data, B: dense(OUT, 4, 0.1).data, scale: 2 },
    'model.layers.0.mlp.down_proj': { r: 2, in: OUT, out: IN, A: dense(2, OUT).data, B: dense(IN, 2, 0.1).data, scale: 0.5 },
  };
  const qdir = join(work, 'q-adapter');
  const { report } = writeQuantizedAdapter(qdir, modules, { base_model_name_or_path: 'tiny' });
  const orig: Record<string, Entry> = {};
  for (const [n, m] of Object.entries(modules)) {
    orig[`base_model.model.${n}.lora_A.weight`] = saveF32(work, `${n}-A`, m.A, [m.r, m.in]);
    orig[`base_model.model.${n}.lora_B.weight`] = saveF32(
      work,
      `${n}-B`,
      m.B.map((v) => v * m.scale),
      [m.out, m.r],
    );
  }
  writeJson(work, 'cases.json', [
    {
      kind: 'eora',
      id: 'eora',
      delta: saveF32(work, 'delta', delta.data, [OUT, IN]),
      x: saveF32(work, 'x', x.data, [64, IN]),
      rank: 4,
      floor: 1e-10,
    },
    { kind: 'cur', id: 'cur', w: saveF32(work, 'wc', wc.data, [OUT, IN]), colw: saveF32(work, 'colw', colw, [IN]), rank: 6 },
    { kind: 'quant', id: 'quant', file: join(qdir, 'adapter_model.safetensors'), orig },
  ]);
  let res: Record<string, Record<string, unknown>> = {};
  it('runs the reference', () => {
    runPython('compress_ref.py', work);
    res = readJson(work, 'results.json') as typeof res;
  });
  it('EoRA equals the reference and beats the plain-SVD baseline on the calibration inputs', () => {
    const r = eora(delta, x, 4);
    const ref = res.eora as { ba: Entry; gap: number; error_after: number; error_plain: number };
    assert.ok(ref.gap >= 1e-3, `gap ${ref.gap}`);
    const e = rel(delta64(r.module), loadF32(work, ref.ba));
    assert.ok(e <= 1e-5, `EoRA BA rel ${e}`);
    assert.ok(Math.abs(r.errorAfter - ref.error_after) <= 1e-4 * ref.error_after);
    assert.ok(r.errorAfter <= ref.error_plain * (1 + 1e-6), `${r.errorAfter} > plain ${ref.error_plain}`);
    assert.ok(r.errorAfter < r.errorBefore);
  });
  it('CUR: DEIM indices exact, C·U·R rel ≤ 1e-4', () => {
    const r = curDecompose(wc, 6, colw);
    const ref = res.cur as { rows: number[]; cols: number[]; cur: Entry };
    assert.deepEqual(r.rows, ref.rows);
    assert.deepEqual(r.cols, ref.cols);
    const cur = gemm(gemm(r.c, r.u), r.r);
    assert.ok(rel(cur.data, loadF32(work, ref.cur)) <= 1e-4);
    assert.ok(r.relError < 0.05, `relError ${r.relError}`);
  });
  it('int8 adapters: the safetensors library reads what torch would quantize, and dequantizes to ours', () => {
    const ref = res.quant as {
      metadata: Record<string, string>;
      tensors: Record<string, { dtype: string; q_equal: boolean; scale_equal: boolean; deq: Entry }>;
    };
    assert.equal(ref.metadata['lowrank.quantization'], 'int8-rowwise');
    const back = readQuantizedAdapter(qdir);
    for (const [key, t] of Object.entries(ref.tensors)) {
      assert.equal(t.dtype, 'torch.int8');
      assert.ok(t.q_equal, `${key}: int8 values differ from torch's`);
      assert.ok(t.scale_equal, `${key}: scales differ`);
      const [, path, which] = /^base_model\.model\.(.+)\.(lora_A|lora_B)\.weight$/.exec(key) as unknown as [string, string, string];
      const m = back.modules[path] as LoraModule;
      assert.deepEqual(Array.from(which === 'lora_A' ? m.A : m.B), Array.from(loadF32(work, t.deq)));
    }
    for (const r of Object.values(report)) assert.ok(r.relError < 0.01, `int8 rel error ${r.relError}`);
  });
});
