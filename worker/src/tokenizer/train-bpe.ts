/**
 * A byte-level BPE tokenizer (GPT-2 / SmolLM / Qwen2 style: byte-to-unicode alphabet,
 * GPT-2 pre-tokenizer regex, greedy most-frequent-pair merges) learned from a corpus and
 * written as a Hugging Face tokenizer.json + tokenizer_config.json with a ChatML chat
 * template. For the small base models this project makes itself (tests, the demo): the
 * files are the real format, read back by @huggingface/tokenizers and by Python's
 * `tokenizers`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** GPT-2's pre-tokenizer split (the ByteLevel pre-tokenizer's use_regex). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** GPT-2's bytes_to_unicode: every byte as a printable character. */
function byteAlphabet(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  return map;
}

export interface BpeFiles {
  tokenizer: Record<string, unknown>;
  config: Record<string, unknown>;
  vocabSize: number;
}

/** Learns `merges` merges from `corpus` (fewer if pairs run out). Deterministic: ties break by the pair's text. */
export function trainByteLevelBpe(corpus: Iterable<string>, merges: number, modelMaxLength = 2048): BpeFiles {
  const alphabet = byteAlphabet();
  const encoder = new TextEncoder();
  const counts = new Map<string, number>();
  for (const text of corpus) {
    for (const m of text.matchAll(GPT2_SPLIT)) {
      const word = Array.from(encoder.encode(m[0]), (b) => alphabet[b] as string).join('\u0000');
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  const words = [...counts].map(([w, n]) => ({ symbols: w.split('\u0000'), n }));
  const vocab: Record<string, number> = {};
  SPECIAL_TOKENS.forEach((t, i) => {
    vocab[t] = i;
  });
  for (const ch of alphabet) vocab[ch] = Object.keys(vocab).length;
  const mergeList: string[] = [];
  for (let k = 0; k < merges; k++) {
    const pairs = new Map<string, number>();
    for (const { symbols, n } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | undefined;
    let bestN = 1; // a pair seen once is not worth a token
    for (const [key, n] of pairs) if (n > bestN || (n === bestN && best !== undefined && key < best)) [best, bestN] = [key, n];
    if (best === undefined) break;
    const [a, b] = best.split(' ') as [string, string];
    const joined = a + b;
    mergeList.push(best);
    if (!(joined in vocab)) vocab[joined] = Object.keys(vocab).length;
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (w.symbols[i] === a && w.symbols[i + 1] === b) {
          out.push(joined);
          i++;
        } else out.push(w.symbols[i] as string);
      }
      w.symbols = out;
    }
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: mergeList,
    },
  };
  const config = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: null,
    eos_token: '<|endoftext|>',
    pad_token: '<|endoftext|>',
    unk_token: null,
    model_max_length: modelMaxLength,
    clean_up_tokenization_spaces: false,
    chat_template: CHATML_TEMPLATE,
  };
  return { tokenizer, config, vocabSize: Object.keys(vocab).length };
}

export function writeTokenizer(dir: string, files: BpeFiles): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), `${JSON.stringify(files.tokenizer)}\n`);
  writeFileSync(join(dir, 'tokenizer_config.json'), `${JSON.stringify(files.config, null, 2)}\n`);
}
