/**
 * Tiny random models of the Llama-family shapes the CUDA device engine trains (hidden 32,
 * 2 layers: the CUDA emulation runs every CUDA thread on one host thread), written in TS so the
 * device tests need no Python: Llama (GQA 4:2, llama3 RoPE scaling), Qwen2 (GQA 4:1, q/k/v
 * biases), Mistral (sliding window 4 < seq) and SmolLM (tied embeddings, bf16 weights, which
 * the device keeps as bf16). Each comes with a LoRA adapter (B ≠ 0) whose
 * rank, scale and targets vary per module (PEFT rank_pattern / alpha_pattern, rsLoRA).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { llamaConfig } from '../../src/model/tiny-llama.ts';
import type { LoraModule } from '../../src/native/linalg.ts';
import { philox } from '../../src/native/linalg.ts';
import { type WritableTensor, writeSafetensors } from '../../src/native/safetensors.ts';

export interface DeviceShape {
  id: string;
  modelType: 'llama' | 'qwen2' | 'mistral';
  heads: number;
  kvHeads: number;
  tie?: boolean;
  bf16?: boolean;
  config?: Record<string, unknown>;
  /** per target: [rank, alpha]; rsLoRA scales alpha/√r, LoRA alpha/r */
  targets: Record<string, [number, number]>;
  rslora?: boolean;
}

const H = 32;
const FF = 48;
const VOCAB = 80;
const LAYERS = 2;

export const DEVICE_SHAPES: readonly DeviceShape[] = [
  {
    id: 'llama',
    modelType: 'llama',
    heads: 4,
    kvHeads: 2,
    config: {
      rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 },
    },
    targets: { q_proj: [4, 8], k_proj: [2, 8], v_proj: [4, 4], o_proj: [3, 6], gate_proj: [4, 8], up_proj: [2, 2], down_proj: [4, 16] },
  },
  {
    id: 'qwen2',
    modelType: 'qwen2',
    heads: 4,
    kvHeads: 1,
    config: { rope_theta: 1000000 },
    rslora: true,
    targets: { q_proj: [6, 12], v_proj: [6, 12], o_proj: [2, 12], down_proj: [6, 3] },
  },
  {
    id: 'mistral',
    modelType: 'mistral',
    heads: 4,
    kvHeads: 2,
    config: { sliding_window: 4 },
    targets: { q_proj: [2, 5], k_proj: [2, 5], gate_proj: [3, 5], up_proj: [2, 5] },
  },
  {
    id: 'smollm',
    modelType: 'llama',
    heads: 4,
    kvHeads: 4,
    tie: true,
    bf16: true,
    targets: { q_proj: [4, 4], v_proj: [4, 4], down_proj: [4, 4] },
  },
];

/** Writes DIR/<id> (config.json + model.safetensors); returns the directory. */
export function writeDeviceShape(dir: string, s: DeviceShape, seed: number): string {
  const out = join(dir, s.id);
  const hd = H / s.heads;
  let stream = 1;
  const rand = (shape: number[], sd: number): WritableTensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Float32Array.from(philox(seed, stream++, n, 'normal'), (x) => x * sd);
    // SmolLM ships bf16: the loader widens it, the device engine keeps it as bf16.
    return s.bf16 ? { dtype: 'BF16', shape, data } : { dtype: 'F32', shape, data };
  };
  // RMSNorm weights near 1 (fp32, as transformers keeps them in an fp32 checkpoint).
  const norm = (): WritableTensor => ({
    dtype: 'F32',
    shape: [H],
    data: Float32Array.from(philox(seed, stream++, H, 'normal'), (x) => 1 + 0.1 * x),
  });
  const t: Record<string, WritableTensor> = { 'model.embed_tokens.weight': rand([VOCAB, H], 0.5), 'model.norm.weight': norm() };
  if (!s.tie) t['lm_head.weight'] = rand([VOCAB, H], 0.5);
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}.`;
    t[`${p}input_layernorm.weight`] = norm();
    t[`${p}post_attention_layernorm.weight`] = norm();
    t[`${p}self_attn.q_proj.weight`] = rand([s.heads * hd, H], 0.2);
    t[`${p}self_attn.k_proj.weight`] = rand([s.kvHeads * hd, H], 0.2);
    t[`${p}self_attn.v_proj.weight`] = rand([s.kvHeads * hd, H], 0.2);
    t[`${p}self_attn.o_proj.weight`] = rand([H, s.heads * hd], 0.2);
    t[`${p}mlp.gate_proj.weight`] = rand([FF, H], 0.2);
    t[`${p}mlp.up_proj.weight`] = rand([FF, H], 0.2);
    t[`${p}mlp.down_proj.weight`] = rand([H, FF], 0.2);
    if (s.modelType === 'qwen2') {
      t[`${p}self_attn.q_proj.bias`] = rand([s.heads * hd], 0.1);
      t[`${p}self_attn.k_proj.bias`] = rand([s.kvHeads * hd], 0.1);
      t[`${p}self_attn.v_proj.bias`] = rand([s.kvHeads * hd], 0.1);
    }
  }
  const config: Record<string, unknown> = {
    ...llamaConfig({
      vocabSize: VOCAB,
      hiddenSize: H,
      intermediateSize: FF,
      layers: LAYERS,
      heads: s.heads,
      kvHeads: s.kvHeads,
      maxPositions: 64,
      seed,
    }),
    model_type: s.modelType,
    architectures: [`${s.modelType === 'llama' ? 'Llama' : s.modelType === 'qwen2' ? 'Qwen2' : 'Mistral'}ForCausalLM`],
    tie_word_embeddings: s.tie === true,
    ...s.config,
  };
  mkdirSync(out, { recursive: true });
  writeSafetensors(join(out, 'model.safetensors'), t, { format: 'pt' });
  writeFileSync(join(out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  return out;
}

/** The shape's adapter with random A and B (B ≠ 0, so every gradient is non-trivial). */
export function deviceAdapter(s: DeviceShape, inOut: (proj: string) => [number, number], seed: number): Record<string, LoraModule> {
  const modules: Record<string, LoraModule> = {};
  let stream = 1;
  for (let l = 0; l < LAYERS; l++) {
    for (const [proj, [r, alpha]] of Object.entries(s.targets)) {
      const [inDim, outDim] = inOut(proj);
      const group = proj.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(proj) ? 'mlp' : 'self_attn';
      // A at kaiming scale, B small but nonzero (a run some steps in): the attention stays
      // well-conditioned, as METHODS §8.1's tolerances assume (with B ~ A the softmax
      // saturates and fp32 rounding alone moves layer-0 q/k gradients by ~5e-5 rel).
      const A = Float32Array.from(philox(seed, stream++, r * inDim, 'normal'), (x) => x / Math.sqrt(inDim));
      const B = Float32Array.from(philox(seed, stream++, outDim * r, 'normal'), (x) => x * 0.05);
      modules[`model.layers.${l}.${group}.${proj}`] = {
        r,
        in: inDim,
        out: outDim,
        A,
        B,
        scale: s.rslora ? alpha / Math.sqrt(r) : alpha / r,
      };
    }
  }
  return modules;
}

export const DEVICE_VOCAB = VOCAB;
