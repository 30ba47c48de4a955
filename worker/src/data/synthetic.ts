/**
 * Seeded synthetic data for the models this project makes itself (tests, the demo): a
 * small-grammar English corpus with number lists (tokenizer training and pretraining),
 * and downstream tasks with checkable answers: "next: 3 7 1 =" -> " 4 8 2" (each digit
 * plus one, mod 10; "prev" minus one), which need copying by position and a per-token mapping.
 */
import { philox, type Seed, streamId } from '../native/linalg.ts';

const SUBJECTS = ['the cat', 'a dog', 'the bird', 'my friend', 'the teacher', 'a child', 'the farmer', 'our team'];
const VERBS = ['sees', 'likes', 'finds', 'follows', 'helps', 'watches', 'calls', 'knows'];
const OBJECTS = ['the ball', 'a tree', 'the river', 'a house', 'the garden', 'a book', 'the road', 'the moon'];
const ENDINGS = ['today', 'again', 'at night', 'in the morning', 'every day', 'slowly', 'with joy', 'near the hill'];

function draws(seed: Seed, purpose: string, n: number): Float32Array {
  return philox(seed, streamId(purpose), n, 'uniform') as Float32Array;
}

const pick = <T>(xs: readonly T[], u: number): T => xs[Math.min(xs.length - 1, Math.floor(u * xs.length))] as T;

/** n lines of the corpus: sentences, counting runs and digit lists. */
export function corpus(n: number, seed: Seed): string[] {
  const u = draws(seed, 'synthetic:corpus', n * 8);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = (k: number) => u[i * 8 + k] as number;
    const kind = Math.floor(r(0) * 3);
    if (kind === 0) out.push(`${pick(SUBJECTS, r(1))} ${pick(VERBS, r(2))} ${pick(OBJECTS, r(3))} ${pick(ENDINGS, r(4))}.`);
    else if (kind === 1) {
      const start = Math.floor(r(1) * 7);
      out.push(`count: ${[0, 1, 2, 3].map((k) => (start + k) % 10).join(' ')}`);
    } else out.push(`digits: ${[2, 3, 4, 5].map((k) => Math.floor(r(k) * 10)).join(' ')}`);
  }
  return out;
}

export interface TaskRecord {
  prompt: string;
  completion: string;
}

/** A digit task: each of `len` digits plus one ("next") or minus one ("prev"), mod 10. */
export function digitTask(op: 'next' | 'prev', n: number, seed: Seed, len = 3): TaskRecord[] {
  const u = draws(seed, `synthetic:${op}-digit`, n * len);
  const f = op === 'next' ? (d: number) => (d + 1) % 10 : (d: number) => (d + 9) % 10;
  return Array.from({ length: n }, (_, i) => {
    const digits = Array.from({ length: len }, (_, k) => Math.floor((u[i * len + k] as number) * 10) % 10);
    return { prompt: `${op}: ${digits.join(' ')} =`, completion: ` ${digits.map(f).join(' ')}` };
  });
}

/** A language task: the object of a corpus-style sentence ("object: the cat sees a tree today. =" -> " a tree"). */
export function objectTask(n: number, seed: Seed): TaskRecord[] {
  const u = draws(seed, 'synthetic:object', n * 4);
  return Array.from({ length: n }, (_, i) => {
    const r = (k: number) => u[i * 4 + k] as number;
    const object = pick(OBJECTS, r(2));
    return { prompt: `object: ${pick(SUBJECTS, r(0))} ${pick(VERBS, r(1))} ${object} ${pick(ENDINGS, r(3))}. =`, completion: ` ${object}` };
  });
}

/**
 * A parametric family of digit tasks ("add: 3 7 1 =" -> " 6 0 4" for k = 3): each digit plus
 * k, mod 10. The prompt does not say k, so only an adapter for k solves it; neighbouring k
 * are related tasks, which lets a generator over the family be tested on a held-out k.
 */
export function addDigitTask(k: number, n: number, seed: Seed, len = 3): TaskRecord[] {
  const u = draws(seed, 'synthetic:add-digit', n * len);
  return Array.from({ length: n }, (_, i) => {
    const digits = Array.from({ length: len }, (_, j) => Math.floor((u[i * len + j] as number) * 10) % 10);
    return { prompt: `add: ${digits.join(' ')} =`, completion: ` ${digits.map((d) => (d + k) % 10).join(' ')}` };
  });
}

/** The downstream task of the tests: each of `len` digits plus one (mod 10). */
export const nextDigitTask = (n: number, seed: Seed, len = 3): TaskRecord[] => digitTask('next', n, seed, len);
