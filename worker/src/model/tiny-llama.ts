/**
 * A small Llama-shaped model written as a Hugging Face directory (config.json +
 * model.safetensors, f32), initialised as transformers' LlamaPreTrainedModel does
 * (normal(0, initializer_range), norms at 1) from Philox(seed): the seeded base of the
 * tests and of the demo (which then pretrains it, see scripts/lib/pretrain.ts).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { philox } from '../native/linalg.ts';
import { type WritableTensor, writeSafetensors } from '../native/safetensors.ts';

export interface TinyLlamaShape {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  maxPositions: number;
  /** std of the projections' init (transformers' initializer_range; default 0.02). */
  initStd?: number;
  /**
   * std of embed_tokens and lm_head (default 1/sqrt(hidden)·2). The engine trains adapters on
   * projections only: a frozen head at 0.02 could not reach confident logits at all.
   */
  ioStd?: number;
  seed: number;
}

export function llamaConfig(s: TinyLlamaShape): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_act: 'silu',
    vocab_size: s.vocabSize,
    hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    max_position_embeddings: s.maxPositions,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    initializer_range: s.initStd ?? 0.02,
    tie_word_embeddings: false,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: 'float32',
    bos_token_id: null,
    eos_token_id: 0,
    pad_token_id: 0,
  };
}

export function writeTinyLlama(dir: string, s: TinyLlamaShape): void {
  const std = s.initStd ?? 0.02;
  let stream = 1;
  const ioStd = s.ioStd ?? 2 / Math.sqrt(s.hiddenSize);
  const rand = (shape: number[], sd = std): WritableTensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { dtype: 'F32', shape, data: Float32Array.from(philox(s.seed, stream++, n, 'normal'), (x) => x * sd) };
  };
  const ones = (n: number): WritableTensor => ({ dtype: 'F32', shape: [n], data: new Float32Array(n).fill(1) });
  const H = s.hiddenSize;
  const hd = H / s.heads;
  const kv = s.kvHeads * hd;
  const t: Record<string, WritableTensor> = {
    'model.embed_tokens.weight': rand([s.vocabSize, H], ioStd),
    'model.norm.weight': ones(H),
    'lm_head.weight': rand([s.vocabSize, H], ioStd),
  };
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    t[`${p}input_layernorm.weight`] = ones(H);
    t[`${p}post_attention_layernorm.weight`] = ones(H);
    t[`${p}self_attn.q_proj.weight`] = rand([H, H]);
    t[`${p}self_attn.k_proj.weight`] = rand([kv, H]);
    t[`${p}self_attn.v_proj.weight`] = rand([kv, H]);
    t[`${p}self_attn.o_proj.weight`] = rand([H, H]);
    t[`${p}mlp.gate_proj.weight`] = rand([s.intermediateSize, H]);
    t[`${p}mlp.up_proj.weight`] = rand([s.intermediateSize, H]);
    t[`${p}mlp.down_proj.weight`] = rand([H, s.intermediateSize]);
  }
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), t, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(llamaConfig(s), null, 2)}\n`);
}
