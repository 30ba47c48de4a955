/**
 * The Trans-LoRA building blocks on their own: seed encryption (round trip, wrong key,
 * tampering, key formats), the duplicate filter, MMD² against a closed form, the label
 * token choice on a real tokenizer, and few-shot prompts that shrink to fit the context.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { TextTokenizer } from '../src/tokenizer/tokenizer.ts';
import { DedupFilter, jaccard, ngrams } from '../src/transfer/dedup.ts';
import { pickLabels } from '../src/transfer/discriminator.ts';
import { fewShotPrompt } from '../src/transfer/fewshot.ts';
import { medianBandwidth, mmd2 } from '../src/transfer/mmd.ts';
import { decryptSeeds, encryptSeeds, keyId, seedHash, seedKey } from '../src/transfer/seed-crypto.ts';
import { writeTinyBase } from './support/tiny-base.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-transfer-units-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const seeds = [
  { prompt: 'next: 1 2 3 =', completion: ' 2 3 4' },
  { prompt: 'next: 9 9 0 =', completion: ' 0 0 1' },
];

describe('seed encryption', () => {
  const key = randomBytes(32);
  it('round-trips, hides the text, and names the key by fingerprint only', () => {
    const enc = encryptSeeds(seeds, key);
    assert.deepEqual(decryptSeeds(enc, key, 'f'), seeds);
    assert.ok(!JSON.stringify(enc).includes('next:'));
    assert.equal(enc.keyId, keyId(key));
    assert.notEqual(encryptSeeds(seeds, key).iv, enc.iv, 'a fresh IV per file');
  });
  it('refuses a wrong key and altered ciphertext', () => {
    const enc = encryptSeeds(seeds, key);
    assert.throws(() => decryptSeeds(enc, randomBytes(32), 'f'), /encrypted under key .* give the key used at stage 0/);
    const bytes = Buffer.from(enc.ciphertext, 'base64');
    bytes[0] = (bytes[0] as number) ^ 1;
    assert.throws(() => decryptSeeds({ ...enc, ciphertext: bytes.toString('base64') }, key, 'f'), /fail authentication/);
  });
  it('reads the key as hex or base64 and says what to set otherwise', () => {
    assert.deepEqual(seedKey({ LOWRANK_SEED_KEY: key.toString('hex') }), key);
    assert.deepEqual(seedKey({ LOWRANK_SEED_KEY: key.toString('base64') }), key);
    assert.throws(() => seedKey({}), /LOWRANK_SEED_KEY is not set/);
    assert.throws(() => seedKey({ LOWRANK_SEED_KEY: 'abcd' }), /must be 32 bytes/);
  });
  it('hashes a seed as sha256 of its canonical JSON', () => {
    assert.match(seedHash(seeds[0] as (typeof seeds)[0]), /^sha256:[0-9a-f]{64}$/);
    assert.notEqual(seedHash(seeds[0] as (typeof seeds)[0]), seedHash(seeds[1] as (typeof seeds)[0]));
  });
});

describe('duplicate filter', () => {
  it('word-trigram Jaccard: one digit changed of three is far, a repeated phrase is near', () => {
    assert.equal(jaccard(ngrams('next: 3 7 1 ='), ngrams('next: 3 7 2 =')), 1 / 5);
    const long = 'the cat sees the ball today and the dog sees a tree again';
    assert.ok(jaccard(ngrams(long), ngrams(`${long} now`)) >= 0.9);
  });
  it('drops exact (whitespace-normalised) and near duplicates and counts each', () => {
    const f = new DedupFilter(0.9);
    const long = 'the cat sees the ball today and the dog sees a tree again';
    assert.deepEqual(
      ['next: 1 2 3 =', 'next:  1 2 3 = ', 'next: 1 2 4 =', long, `${long} now`].map((t) => f.admit(t)),
      [true, false, true, true, false],
    );
    assert.deepEqual([f.exact, f.near], [1, 1]);
    const off = new DedupFilter(0);
    assert.deepEqual([off.admit(long), off.admit(`${long} now`)], [true, true], 'threshold 0: near-duplicate removal off');
  });
});

describe('MMD²', () => {
  const v = (...x: number[]) => Float64Array.from(x);
  it('matches the closed form for one point each (2 − 2·exp(−d²/bw)) and is 0 for equal samples', () => {
    // Tolerance 1e-12: f64 sums of a few terms.
    assert.ok(Math.abs(mmd2([v(0, 0)], [v(3, 4)], 10) - (2 - 2 * Math.exp(-25 / 10))) < 1e-12);
    assert.ok(Math.abs(mmd2([v(1, 0), v(0, 1)], [v(0, 1), v(1, 0)])) < 1e-12);
    assert.equal(medianBandwidth([v(0), v(1), v(3)]), 4);
  });
  it('grows with the shift between two samples', () => {
    const a = [v(0, 0), v(0, 1), v(1, 0)];
    const near = a.map((x) => v((x[0] as number) + 0.1, x[1] as number));
    const far = a.map((x) => v((x[0] as number) + 2, x[1] as number));
    assert.ok(mmd2(a, near, 1) < mmd2(a, far, 1));
  });
});

describe('label tokens and few-shot prompts', () => {
  it('picks two distinct single tokens the tokenizer has', () => {
    writeTinyBase(tmp);
    const tok = TextTokenizer.load(tmp);
    const l = pickLabels(tok);
    assert.notEqual(l.real.id, l.synthetic.id);
    assert.deepEqual(tok.encode(l.real.text, false), [l.real.id]);
    assert.deepEqual(tok.encode(l.synthetic.text, false), [l.synthetic.id]);
  });
  it('draws k seeds per prompt (seeded) and drops seeds until the prompt fits', () => {
    const inputs = ['a', 'b', 'c', 'd', 'e'];
    const p = fewShotPrompt(inputs, 3, 1, 0, () => true);
    assert.equal(p.split('\n').length, 4);
    assert.equal(
      p,
      fewShotPrompt(inputs, 3, 1, 0, () => true),
      'same seed and index, same prompt',
    );
    assert.equal(fewShotPrompt(inputs, 3, 1, 0, (s) => s.length <= 4).split('\n').length, 3);
  });
});
