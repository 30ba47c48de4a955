/**
 * Duplicate filter for synthetic prompts (METHODS §4.1, [ours]): exact duplicates after
 * whitespace normalisation, and near duplicates whose word n-gram Jaccard similarity to an
 * already kept prompt is >= the threshold (n = 3; texts shorter than n words compare as
 * one gram). Quadratic in the kept set, which is bounded by `keep`.
 */
const N = 3;

export function normalise(text: string): string {
  return text.trim().replace(/\s+/g, ' ');
}

export function ngrams(text: string, n = N): Set<string> {
  const words = normalise(text).split(' ');
  if (words.length <= n) return new Set([words.join(' ')]);
  const out = new Set<string>();
  for (let i = 0; i + n <= words.length; i++) out.add(words.slice(i, i + n).join(' '));
  return out;
}

export function jaccard(a: Set<string>, b: Set<string>): number {
  let inter = 0;
  for (const g of a) if (b.has(g)) inter++;
  const union = a.size + b.size - inter;
  return union === 0 ? 1 : inter / union;
}

export class DedupFilter {
  readonly #exact = new Set<string>();
  readonly #grams: Set<string>[] = [];
  readonly #threshold: number;
  exact = 0;
  near = 0;

  constructor(threshold: number) {
    this.#threshold = threshold;
  }

  /** True when `text` is new (and remembers it); counts why a duplicate was refused. */
  admit(text: string): boolean {
    const key = normalise(text);
    if (this.#exact.has(key)) {
      this.exact++;
      return false;
    }
    const g = ngrams(key);
    // A threshold above 1 could never match; 0 would refuse everything after the first.
    if (this.#threshold > 0 && this.#grams.some((k) => jaccard(g, k) >= this.#threshold)) {
      this.near++;
      return false;
    }
    this.#exact.add(key);
    this.#grams.push(g);
    return true;
  }
}
