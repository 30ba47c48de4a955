/**
 * Serving-rank advice on push: vLLM serves LoRA adapters up to --max-lora-rank (default
 * 16; slots 8, 16, 32, 64, 128, 256, 320, 512), and every adapter of a batch pays for the
 * largest rank loaded. A version above the default gets a warning and, ready to submit,
 * the one-flag CompressionJob that fits it to the default slot.
 */
const VLLM_DEFAULT_MAX_LORA_RANK = 16;
const VLLM_LARGEST_SLOT = 512;

export interface PushWarning {
  code: 'rank_above_serving_default' | 'rank_above_serving_slots';
  message: string;
  /** A CompressionJob (POST /v1/jobs or kubectl apply) that fits the adapter to the limit. */
  suggestedJob: Record<string, unknown>;
}

/** The largest rank an adapter config declares (r and any rank_pattern entry). */
export function maxRank(config: Record<string, unknown>, rank?: number | null): number | undefined {
  const pattern = (config.rank_pattern ?? {}) as Record<string, unknown>;
  const ranks = [rank, config.r, ...Object.values(pattern)].filter(
    (r): r is number => typeof r === 'number' && Number.isInteger(r) && r > 0,
  );
  return ranks.length > 0 ? Math.max(...ranks) : undefined;
}

export function servingWarnings(repository: string, version: number, config: Record<string, unknown>, rank?: number | null): PushWarning[] {
  const r = maxRank(config, rank);
  if (r === undefined || r <= VLLM_DEFAULT_MAX_LORA_RANK) return [];
  const name = `${repository.replace('/', '-')}-v${version}-serve${VLLM_DEFAULT_MAX_LORA_RANK}`.slice(0, 63).replace(/-+$/, '');
  const suggestedJob = {
    apiVersion: 'lora.lowrank.dev/v1alpha1',
    kind: 'CompressionJob',
    metadata: { name },
    spec: {
      source: { adapter: { repository, version } },
      servingMaxRank: VLLM_DEFAULT_MAX_LORA_RANK,
      output: { repository, tags: [`serve-${VLLM_DEFAULT_MAX_LORA_RANK}`] },
    },
  };
  const above = r > VLLM_LARGEST_SLOT;
  return [
    {
      code: above ? 'rank_above_serving_slots' : 'rank_above_serving_default',
      message: above
        ? `rank ${r} is above every vLLM --max-lora-rank slot (largest ${VLLM_LARGEST_SLOT}); vLLM cannot serve it. Submit suggestedJob to compress it.`
        : `rank ${r} is above vLLM's default --max-lora-rank ${VLLM_DEFAULT_MAX_LORA_RANK}: serving it needs --max-lora-rank ${r} for every adapter in the batch. Submit suggestedJob for a rank-${VLLM_DEFAULT_MAX_LORA_RANK} version.`,
      suggestedJob,
    },
  ];
}
