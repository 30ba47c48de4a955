/**
 * A trained adapter as PEFT saves it: adapter_model.safetensors (lora_A, lora_B, and
 * lora_magnitude_vector for DoRA) and an adapter_config.json that says how it was
 * trained (r, lora_alpha, use_rslora, use_dora, lora_dropout, target_modules, patterns),
 * so PEFT loads it with the same scaling the engine trained it with.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoraModule } from '../native/linalg.ts';
import { readSafetensors, type WritableTensor, writeSafetensors } from '../native/safetensors.ts';
import { writePeftAdapter } from '../peft/adapter-dir.ts';

export interface TrainedAdapterInfo {
  baseModel: string;
  rank: number;
  alpha: number;
  useRslora: boolean;
  dropout: number;
  targets: string[];
  rankPattern?: Record<string, number> | undefined;
  alphaPattern?: Record<string, number> | undefined;
  layers?: number[] | undefined;
  init?: 'kaiming-uniform' | 'gaussian';
}

export function writeTrainedAdapter(
  dir: string,
  modules: Record<string, LoraModule>,
  magnitudes: Record<string, Float32Array>,
  info: TrainedAdapterInfo,
): void {
  writePeftAdapter(dir, modules, { base_model_name_or_path: info.baseModel });
  const dora = Object.keys(magnitudes).length > 0;
  if (dora) {
    const file = join(dir, 'adapter_model.safetensors');
    const tensors: Record<string, WritableTensor> = {};
    for (const [k, t] of Object.entries(readSafetensors(file).tensors)) tensors[k] = t as WritableTensor;
    for (const [path, m] of Object.entries(magnitudes))
      tensors[`base_model.model.${path}.lora_magnitude_vector`] = { dtype: 'F32', shape: [m.length], data: m };
    writeSafetensors(file, tensors, { format: 'pt' });
  }
  const configPath = join(dir, 'adapter_config.json');
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  Object.assign(config, {
    r: info.rank,
    lora_alpha: info.alpha,
    use_rslora: info.useRslora,
    use_dora: dora,
    lora_dropout: info.dropout,
    target_modules: info.targets,
    rank_pattern: info.rankPattern ?? {},
    alpha_pattern: info.alphaPattern ?? {},
    layers_to_transform: info.layers ?? null,
    init_lora_weights: info.init === 'gaussian' ? 'gaussian' : true,
  });
  writeFileSync(configPath, `${JSON.stringify(config, null, 2)}\n`);
}
