/**
 * Tiny random models of the Llama-family shapes the engine supports, made by the Python
 * reference (train_ref.py make: a seeded random *ForCausalLM saved with save_pretrained,
 * plus a PEFT adapter with B ≠ 0 for the parity cases). Shared by the engine's parity
 * tests (train-parity) and the inits' (train-inits), so both cover the same shapes.
 */
import { join } from 'node:path';
import { runPython, writeJson } from './python-ref.ts';

// No eos/bos: generate() then always runs max_new_tokens on both sides.
const tiny = {
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  vocab_size: 96,
  max_position_embeddings: 64,
  eos_token_id: null,
  bos_token_id: null,
};

export interface FamilyShape {
  id: string;
  /** transformers config class: llama, qwen2 or mistral */
  family: 'llama' | 'qwen2' | 'mistral';
  /** torch.manual_seed for the random weights */
  seed: number;
  dtype?: 'bf16';
  max_shard_size?: string;
  config: typeof tiny & Record<string, unknown>;
  /** the PEFT adapter train_ref.py make writes next to the base (init_lora_weights=False, B ≠ 0) */
  adapter: { r: number; alpha: number; use_rslora?: boolean; use_dora?: boolean; targets: string[] };
}

export const FAMILY_SHAPES: readonly FamilyShape[] = [
  {
    id: 'llama',
    family: 'llama',
    seed: 1,
    config: {
      ...tiny,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 },
    },
    adapter: { r: 4, alpha: 8, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  },
  {
    id: 'qwen2',
    family: 'qwen2',
    seed: 2,
    config: { ...tiny, num_attention_heads: 4, num_key_value_heads: 1, rope_theta: 1000000 },
    adapter: { r: 6, alpha: 12, use_rslora: true, targets: ['q_proj', 'v_proj', 'o_proj', 'down_proj'] },
  },
  {
    id: 'mistral',
    family: 'mistral',
    seed: 3,
    config: { ...tiny, num_attention_heads: 4, num_key_value_heads: 2, sliding_window: 4 },
    adapter: { r: 2, alpha: 5, targets: ['q_proj', 'k_proj', 'gate_proj', 'up_proj'] },
  },
  {
    id: 'dora',
    family: 'llama',
    seed: 5,
    config: { ...tiny, num_attention_heads: 4, num_key_value_heads: 2, attention_bias: true },
    adapter: { r: 4, alpha: 8, use_dora: true, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'down_proj'] },
  },
  {
    id: 'smollm',
    family: 'llama',
    seed: 4,
    dtype: 'bf16',
    max_shard_size: '20KB',
    config: { ...tiny, num_attention_heads: 4, num_key_value_heads: 4, tie_word_embeddings: true },
    adapter: { r: 4, alpha: 4, targets: ['q_proj', 'v_proj', 'down_proj'] },
  },
];

export function familyShape(id: string): FamilyShape {
  const s = FAMILY_SHAPES.find((m) => m.id === id);
  if (!s) throw new Error(`no family shape "${id}" (known: ${FAMILY_SHAPES.map((m) => m.id).join(', ')})`);
  return s;
}

/** Writes DIR/<id>/base and DIR/<id>/adapter for each shape (one Python run for all). */
export function makeFamilyModels(dir: string, shapes: readonly FamilyShape[]): void {
  writeJson(dir, 'spec.json', { models: shapes });
  runPython('train_ref.py', 'make', dir);
}

/** The Hugging Face model directory makeFamilyModels wrote for a shape. */
export const familyBase = (dir: string, shape: FamilyShape): string => join(dir, shape.id, 'base');
