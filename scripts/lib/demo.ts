/**
 * The one-command run's example, end to end through the real registry:
 *   1. waits for the registry;
 *   2. submits the example training job through the REST front door (validated by the
 *      shared job schema) and prints it with defaults;
 *   3. writes two small PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors,
 *      by the native core's safetensors writer), pushes them with lineage and tags, pulls
 *      one back verified;
 *   4. makes (first run; cached after) and registers a small pretrained base, trains two
 *      task adapters on it by AdapterJobs submitted over REST (demo-train.ts) and prints
 *      the measured before/after eval loss and task accuracy;
 *   5. submits an AdapterMerge (svd of the two trained adapters) and a CompressionJob
 *      (rank reduction to an energy threshold) over REST, follows them over Server-Sent
 *      Events while the local executor runs them through lora-worker, and prints the
 *      versions they made, their measured metrics and accuracies, and the lineage.
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
import { accuracyOf, trainingDemo } from './demo-train.ts';

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

// 2. Two small LoRA adapters for a Llama-shaped model (hidden 64, 2 layers, q/v, r = 8).
const token = readFileSync(tokenFile, 'utf8').trim();
const client = new RegistryClient({ registry: base, token });
const BASE = 'HuggingFaceTB/SmolLM2-135M';

function writeAdapter(dir: string, seed: number): void {
  mkdirSync(dir, { recursive: true });
  const r = 8;
  const hidden = 64;
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  let stream = 0;
  for (let layer = 0; layer < 2; layer++) {
    for (const proj of ['q_proj', 'v_proj']) {
      const key = `base_model.model.model.layers.${layer}.self_attn.${proj}`;
      const normal = (n: number, scale: number) => Float32Array.from(philox(seed, stream++, n, 'normal'), (x) => x * scale);
      tensors[`${key}.lora_A.weight`] = { dtype: 'F32', shape: [r, hidden], data: normal(r * hidden, 1 / Math.sqrt(hidden)) };
      tensors[`${key}.lora_B.weight`] = { dtype: 'F32', shape: [hidden, r], data: normal(hidden * r, 0.01) };
    }
  }
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: BASE,
    r,
    lora_alpha: 16,
    target_modules: ['q_proj', 'v_proj'],
    lora_dropout: 0,
    bias: 'none',
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    inference_mode: true,
  };
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
}

async function ensureRepo(name: string, description: string): Promise<boolean> {
  return client
    .request('POST', '/v1/repos', {
      body: { namespace: 'demo', name, baseModel: BASE, visibility: 'internal', description, taskTags: ['demo'] },
    })
    .then(
      () => true,
      (err: Error & { code?: string }) => {
        if (err.code !== 'conflict') throw err;
        return false;
      },
    );
}

const pushedVersions: Record<string, number> = {};
for (const [name, seed, description] of [
  ['example-adapter', 2026, 'The one-command demo adapter'],
  ['second-adapter', 7, 'A second demo adapter to merge with the first'],
] as const) {
  const dir = join(work, name);
  writeAdapter(dir, seed);
  const created = await ensureRepo(name, description);
  const pushed = await push(client, dir, `demo/${name}`, {
    tags: ['prod'],
    lineage: [{ relation: 'trained_from', parentRef: `hf:${BASE}` }],
  });
  pushedVersions[name] = pushed.number;
  say(
    `${created ? `created demo/${name} and ` : ''}pushed version ${pushed.number} (${pushed.uploaded} blobs uploaded, ${pushed.skipped} already stored)`,
  );
}
const pulled = await pull(client, 'demo/example-adapter', 'prod', join(work, 'pulled'));
say(`pulled demo/example-adapter@${pulled.number} back into ${join(work, 'pulled')}, every file verified by sha256`);

// 3. Jobs through REST, run by the local executor.
interface JobView {
  id: string;
  kind: string;
  status: string;
  error: string | null;
  progress: { stage?: string; output?: { ref: string; repository: string; version: number } };
}

async function follow(id: string): Promise<JobView> {
  const res = await client.request('GET', `/v1/jobs/${id}/events`);
  const decoder = new TextDecoder();
  let buf = '';
  let last: JobView | undefined;
  let stage = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      const data = buf
        .slice(0, i)
        .split('\n')
        .find((l) => l.startsWith('data: '));
      buf = buf.slice(i + 2);
      if (!data) continue;
      last = JSON.parse(data.slice(6)) as JobView;
      const now = `${last.status}${last.progress.stage ? ` (${last.progress.stage})` : ''}`;
      if (now !== stage) say(`  ${last.kind} ${id.slice(0, 8)}: ${now}`);
      stage = now;
    }
  }
  if (!last) throw new Error(`no events for job ${id}`);
  return last;
}

async function runJob(spec: unknown): Promise<{ repository: string; version: number; ref: string }> {
  const job = await client.json<JobView>('POST', '/v1/jobs', spec);
  const done = await follow(job.id);
  if (done.status !== 'succeeded' || !done.progress.output) {
    const logs = await client.json<{ lines: { text: string }[] }>('GET', `/v1/jobs/${job.id}/logs`);
    say(logs.lines.map((l) => `    ${l.text}`).join('\n'));
    throw new Error(`${job.kind} ${job.id} ended ${done.status}: ${done.error ?? ''}`);
  }
  return done.progress.output;
}

// 4. A pretrained base and two task adapters trained on it, measured before and after.
const training = await trainingDemo(client, work, runJob, say);
const [nextTask, prevTask] = training.tasks.map((t) => t.out) as [(typeof training.tasks)[0]['out'], (typeof training.tasks)[0]['out']];

// 5. Merge the two trained adapters, then compress the merge.
const merged = await runJob({
  kind: 'AdapterMerge',
  metadata: { name: 'demo-svd-merge' },
  spec: {
    inputs: [
      { repository: nextTask.repository, version: nextTask.version },
      { repository: prevTask.repository, version: prevTask.version },
    ],
    weights: [1, 1],
    method: 'svd',
    targetRank: 16,
    output: {
      repository: 'demo/merged-adapter',
      tags: ['svd-r16'],
      visibility: 'internal',
      description: 'SVD merge of the two trained task adapters',
    },
  },
});
const mergedVersion = await client.json<{ metrics: Record<string, number> }>(
  'GET',
  `/v1/repos/${merged.repository}/versions/${merged.version}`,
);
say(
  `merged: ${merged.ref} (svd, rank 16 from 8 + 8; retained energy: min ${mergedVersion.metrics.retainedEnergyMin?.toFixed(4)}, mean ${mergedVersion.metrics.retainedEnergyMean?.toFixed(4)}); ` +
    `task accuracy: ${await accuracyOf(client, training, merged, work)}`,
);
const compressed = await runJob({
  kind: 'CompressionJob',
  metadata: { name: 'demo-energy-90' },
  spec: {
    mode: 'rank-reduction',
    source: { adapter: { repository: merged.repository, version: merged.version } },
    rankPolicy: { energy: { threshold: 0.9 } },
    output: { repository: merged.repository, tags: ['energy90'] },
  },
});
const compressedVersion = await client.json<{ metrics: Record<string, number>; methodMetadata: Record<string, number> }>(
  'GET',
  `/v1/repos/${compressed.repository}/versions/${compressed.version}`,
);
const m = compressedVersion.metrics;
say(
  `compressed: ${compressed.ref} (rank ${compressedVersion.methodMetadata.ranksBefore} -> ${compressedVersion.methodMetadata.ranksAfter} at 90% energy; ` +
    `parameters ${m.paramsBefore} -> ${m.paramsAfter}; energy kept >= ${m.energyKeptMin?.toFixed(4)}, relative error <= ${m.relErrorMax?.toFixed(4)}); ` +
    `task accuracy: ${await accuracyOf(client, training, compressed, work)}`,
);
// The trained "next" adapter alone at 90% energy: what compression costs a single task.
const compressedTask = await runJob({
  kind: 'CompressionJob',
  metadata: { name: 'demo-next-energy-90' },
  spec: {
    mode: 'rank-reduction',
    source: { adapter: { repository: nextTask.repository, version: nextTask.version } },
    rankPolicy: { energy: { threshold: 0.9 } },
    output: { repository: nextTask.repository, tags: ['energy90'] },
  },
});
const taskVersion = await client.json<{ metrics: Record<string, number>; methodMetadata: Record<string, number> }>(
  'GET',
  `/v1/repos/${compressedTask.repository}/versions/${compressedTask.version}`,
);
say(
  `compressed: ${compressedTask.ref} (rank ${taskVersion.methodMetadata.ranksBefore} -> ${taskVersion.methodMetadata.ranksAfter} at 90% energy; ` +
    `parameters ${taskVersion.metrics.paramsBefore} -> ${taskVersion.metrics.paramsAfter}); task accuracy: ${await accuracyOf(client, training, compressedTask, work)}`,
);
// 6. Post-processing: the registry computed each new version's spectra.
for (let i = 0; i < 100; i++) {
  const d = await client.json<{ state: string; summary?: { modules: number; meanEffectiveRank: number; maxRank: number } }>(
    'GET',
    `/v1/repos/${compressed.repository}/versions/${compressed.version}/diagnostics`,
  );
  if (d.state === 'ready' && d.summary) {
    say(
      `diagnostics of ${compressed.ref}: ${d.summary.modules} modules, rank ${d.summary.maxRank}, mean effective rank ${d.summary.meanEffectiveRank}`,
    );
    break;
  }
  await new Promise((r) => setTimeout(r, 100));
}
const graph = await client.json<Graph>(
  'GET',
  `/v1/repos/${compressed.repository}/versions/${compressed.version}/lineage?direction=ancestors`,
);
say(`lineage of ${compressed.ref}:\n${renderTree(graph, 'ancestors')}`);
say(
  `lineage in the web catalog: ${base}/repos/${compressed.repository}/versions/${compressed.version}/lineage (sign in with the token in ${tokenFile})`,
);
say(`compare merge and compression: ${base}/compare?a=${merged.ref}&b=${compressed.ref}`);
say(`lineage over the API: ${base}/v1/repos/${compressed.repository}/versions/${compressed.version}/lineage`);
say(`try: LOWRANK_REGISTRY=${base} LOWRANK_TOKEN=$(cat ${tokenFile}) npm run lora -- search demo`);
