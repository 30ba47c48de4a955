/**
 * The one-command run's example, end to end through the real registry:
 *   1. waits for the registry;
 *   2. submits the example training job through the REST front door (validated by the
 *      shared job schema) and prints it with defaults;
 *   3. writes a small PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors,
 *      by the native core's safetensors writer), pushes it as demo/example-adapter with
 *      lineage and a tag, pulls it back verified, and prints its lineage.
 * Usage: node scripts/lib/demo.ts <registry-url> <job.yaml> <token-file> <work-dir>
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { type Graph, renderTree } from '../../registry-api/src/cli/lineage-tree.ts';
import { pull, push } from '../../registry-api/src/cli/transfer.ts';
import { philox } from '../../worker/src/native/linalg.ts';
import { writeSafetensors } from '../../worker/src/native/safetensors.ts';

const [base, jobFile, tokenFile, work] = process.argv.slice(2);
if (!base || !jobFile || !tokenFile || !work) throw new Error('usage: demo.ts <registry-url> <job.yaml> <token-file> <work-dir>');
const say = (s: string) => process.stderr.write(`${s}\n`);

const deadline = Date.now() + 60_000;
while (
  !(await fetch(`${base}/readyz`).then(
    (r) => r.ok,
    () => false,
  ))
) {
  if (Date.now() > deadline) {
    say(`the registry at ${base} did not become ready in 60 s; see its log above`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 200));
}

// 1. The example job through the REST front door.
const job = parse(readFileSync(jobFile, 'utf8'));
const res = await fetch(`${base}/v1/jobs:validate`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(job),
});
const body = (await res.json()) as { resource?: { kind: string; spec: { mode?: string; method?: { type?: string } } }; detail?: string };
if (!res.ok || !body.resource) {
  say(`example job ${jobFile} was rejected: ${JSON.stringify(body, null, 2)}`);
  process.exit(1);
}
say(
  `example ${body.resource.kind} (${body.resource.spec.mode}, ${body.resource.spec.method?.type}) from ${jobFile}: valid, defaults applied`,
);

// 2. A small LoRA adapter for a Llama-shaped model (hidden 64, 2 layers, q/v, r = 8).
const token = readFileSync(tokenFile, 'utf8').trim();
const client = new RegistryClient({ registry: base, token });
const dir = join(work, 'example-adapter');
mkdirSync(dir, { recursive: true });
const r = 8;
const hidden = 64;
const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
let stream = 0;
for (let layer = 0; layer < 2; layer++) {
  for (const proj of ['q_proj', 'v_proj']) {
    const key = `base_model.model.model.layers.${layer}.self_attn.${proj}`;
    const normal = (n: number, scale: number) => Float32Array.from(philox(2026, stream++, n, 'normal'), (x) => x * scale);
    tensors[`${key}.lora_A.weight`] = { dtype: 'F32', shape: [r, hidden], data: normal(r * hidden, 1 / Math.sqrt(hidden)) };
    tensors[`${key}.lora_B.weight`] = { dtype: 'F32', shape: [hidden, r], data: normal(hidden * r, 0.01) };
  }
}
writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
writeFileSync(
  join(dir, 'adapter_config.json'),
  JSON.stringify(
    {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: 'HuggingFaceTB/SmolLM2-135M',
      r,
      lora_alpha: 16,
      target_modules: ['q_proj', 'v_proj'],
      lora_dropout: 0,
      bias: 'none',
      use_rslora: false,
      use_dora: false,
      init_lora_weights: true,
      inference_mode: true,
    },
    null,
    2,
  ),
);

const created = await client
  .request('POST', '/v1/repos', {
    body: {
      namespace: 'demo',
      name: 'example-adapter',
      baseModel: 'HuggingFaceTB/SmolLM2-135M',
      visibility: 'internal',
      description: 'The one-command demo adapter',
      taskTags: ['demo'],
    },
  })
  .then(
    () => true,
    (err: Error & { code?: string }) => {
      if (err.code !== 'conflict') throw err;
      return false;
    },
  );
const pushed = await push(client, dir, 'demo/example-adapter', {
  tags: ['prod'],
  lineage: [{ relation: 'trained_from', parentRef: 'hf:HuggingFaceTB/SmolLM2-135M' }],
});
say(
  `${created ? 'created demo/example-adapter and ' : ''}pushed version ${pushed.number} (${pushed.uploaded} blobs uploaded, ${pushed.skipped} already stored)`,
);
const pulled = await pull(client, 'demo/example-adapter', 'prod', join(work, 'pulled'));
say(`pulled demo/example-adapter@${pulled.number} back into ${join(work, 'pulled')}, every file verified by sha256`);
const graph = await client.json<Graph>('GET', `/v1/repos/demo/example-adapter/versions/${pushed.number}/lineage?direction=ancestors`);
say(`lineage:\n${renderTree(graph, 'ancestors')}`);
say(`try: LOWRANK_REGISTRY=${base} LOWRANK_TOKEN=$(cat ${tokenFile}) npm run lora -- search demo`);
