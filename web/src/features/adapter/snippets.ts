/**
 * Copy-paste ways to pull a version: our CLI, huggingface_hub, PEFT (both through the
 * registry's Hugging Face-compatible API via HF_ENDPOINT) and vLLM (serving the downloaded
 * directory as a LoRA module).
 */
export interface Snippet {
  id: string;
  title: string;
  language: string;
  code: string;
}

export function pullSnippets(o: { origin: string; repo: string; number: number; baseModel: string; rank: number | null }): Snippet[] {
  const dir = `./${o.repo.split('/')[1] ?? 'adapter'}-v${o.number}`;
  const name = o.repo.split('/')[1] ?? 'adapter';
  const maxRank = [8, 16, 32, 64, 128, 256, 320, 512].find((r) => r >= (o.rank ?? 8)) ?? 512;
  return [
    {
      id: 'cli',
      title: 'lora CLI',
      language: 'shell',
      code: `lora login --registry ${o.origin}\nlora pull ${o.repo}@${o.number} ${dir}`,
    },
    {
      id: 'hf',
      title: 'huggingface_hub',
      language: 'python',
      code: [
        'import os',
        `os.environ["HF_ENDPOINT"] = "${o.origin}"  # before importing huggingface_hub`,
        'from huggingface_hub import snapshot_download',
        '',
        `path = snapshot_download("${o.repo}", revision="${o.number}", token=os.environ["LOWRANK_TOKEN"])`,
      ].join('\n'),
    },
    {
      id: 'peft',
      title: 'PEFT',
      language: 'python',
      code: [
        'import os',
        `os.environ["HF_ENDPOINT"] = "${o.origin}"  # adapters come from the registry`,
        'from transformers import AutoModelForCausalLM',
        'from peft import PeftModel',
        '',
        `base = AutoModelForCausalLM.from_pretrained("${o.baseModel}")`,
        `model = PeftModel.from_pretrained(base, "${o.repo}", revision="${o.number}", token=os.environ["LOWRANK_TOKEN"])`,
      ].join('\n'),
    },
    {
      id: 'vllm',
      title: 'vLLM',
      language: 'shell',
      code: [
        `HF_ENDPOINT=${o.origin} HF_TOKEN=$LOWRANK_TOKEN \\`,
        `  huggingface-cli download ${o.repo} --revision ${o.number} --local-dir ${dir}`,
        `vllm serve ${o.baseModel} --enable-lora --max-lora-rank ${maxRank} \\`,
        `  --lora-modules ${name}=${dir}`,
      ].join('\n'),
    },
  ];
}
