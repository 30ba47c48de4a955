/**
 * A base model's tokenizer: tokenizer.json (and tokenizer_config.json when present)
 * through @huggingface/tokenizers, the JS port of the Rust `tokenizers` library, and the
 * model's chat template rendered by @huggingface/jinja (the engine transformers.js uses).
 * Nothing is downloaded: the files come from the model directory.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { LowrankError } from '@lowrank/crds/errors';

export interface ChatMessage {
  role: string;
  content: string;
}

function readJson(path: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new LowrankError('invalid_file', `${path}: ${what} is not valid JSON (${(err as Error).message})`);
  }
}

/** tokenizer_config.json names special tokens as a string or as {content}. */
function tokenName(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

export class TextTokenizer {
  readonly #tok: Tokenizer;
  readonly config: Record<string, unknown>;
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly padId: number;
  readonly chatTemplate: string | undefined;

  private constructor(tok: Tokenizer, config: Record<string, unknown>) {
    this.#tok = tok;
    this.config = config;
    this.vocabSize = tok.get_vocab(true).size;
    const id = (key: string) => {
      const name = tokenName(config[key]);
      return name === undefined ? undefined : tok.token_to_id(name);
    };
    this.bosId = id('bos_token');
    this.eosId = id('eos_token');
    this.padId = id('pad_token') ?? this.eosId ?? 0;
    this.chatTemplate = typeof config.chat_template === 'string' ? config.chat_template : undefined;
  }

  /** Reads <dir>/tokenizer.json (required) and <dir>/tokenizer_config.json (optional). */
  static load(dir: string): TextTokenizer {
    const path = join(dir, 'tokenizer.json');
    if (!existsSync(path))
      throw new LowrankError('invalid_file', `${dir}: tokenizer.json is missing (the base model directory must carry its tokenizer)`);
    const json = readJson(path, 'tokenizer.json');
    const configPath = join(dir, 'tokenizer_config.json');
    const config = existsSync(configPath) ? readJson(configPath, 'tokenizer_config.json') : {};
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(json, config);
    } catch (err) {
      throw new LowrankError('invalid_file', `${path}: not a tokenizer this worker can load (${(err as Error).message})`);
    }
    return new TextTokenizer(tok, config);
  }

  /** Token ids of text; addSpecial adds what the tokenizer's post-processor adds (e.g. BOS). */
  encode(text: string, addSpecial = true): number[] {
    return this.#tok.encode(text, { add_special_tokens: addSpecial }).ids;
  }

  decode(ids: ArrayLike<number>, skipSpecial = true): string {
    if (ids.length === 0) return ''; // the library refuses an empty list
    return this.#tok.decode(Array.from(ids), { skip_special_tokens: skipSpecial });
  }

  /** The chat as text by `template` (default: the tokenizer's chat_template). */
  renderChat(messages: ChatMessage[], addGenerationPrompt: boolean, template?: string): string {
    const source = template ?? this.chatTemplate;
    if (!source)
      throw new LowrankError(
        'invalid_spec',
        'the tokenizer has no chat_template (tokenizer_config.json) for a chat dataset: set spec.dataset.chatTemplate',
      );
    let t: Template;
    try {
      t = new Template(source);
    } catch (err) {
      throw new LowrankError('invalid_spec', `the chat template does not parse: ${(err as Error).message}`);
    }
    return t.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: tokenName(this.config.bos_token) ?? '',
      eos_token: tokenName(this.config.eos_token) ?? '',
    });
  }
}
