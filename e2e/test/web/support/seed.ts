/**
 * The catalog's test data, pushed through the registry's HTTP API as a client would: small
 * real PEFT adapters (safetensors written by the native core) trained by a tiny real run,
 * merged (PEFT `cat`, two parents with weights) and rank-reduced by the native core, each
 * with its spectra computed by the native core (METHODS §6) under metrics.diagnostics, plus a
 * 50-plus-version family for the graph, and a private repository of another team.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createToken } from '../../../../registry-api/src/auth/tokens.ts';
import type { PrismaClient } from '../../../../registry-api/src/generated/prisma/client.ts';
import { reduceRank } from '../../../../worker/src/native/compress.ts';
import { type LoraModule, spectra } from '../../../../worker/src/native/linalg.ts';
import { mergeAdapters } from '../../../../worker/src/native/merge.ts';
import { writeSafetensors } from '../../../../worker/src/native/safetensors.ts';
import { trainToyLora } from './toy-training.ts';

export const BASE_MODEL = 'HuggingFaceTB/SmolLM2-135M';
const HIDDEN = 64;
const MODULES = [0, 1].flatMap((l) => ['q_proj', 'v_proj'].map((p) => `base_model.model.model.layers.${l}.self_attn.${p}`));

export interface Seeded {
  tokens: { ada: string; adaRead: string; bob: string };
}

interface Push {
  modules: Record<string, LoraModule>;
  method: string;
  lineage: { relation: string; parent?: string; parentRef?: string; weight?: number }[];
  tags?: string[];
  readme?: string;
  lossCurve?: { step: number; loss: number; evalLoss: number }[];
  methodMetadata?: Record<string, unknown>;
}

/** PEFT's adapter_config.json for modules that share rank and scale (alpha = scale · r). */
function peftConfig(modules: Record<string, LoraModule>) {
  const first = Object.values(modules)[0];
  const r = Math.max(...Object.values(modules).map((m) => m.r));
  const rankPattern = Object.fromEntries(
    Object.entries(modules).flatMap(([k, m]) => (m.r === r ? [] : [[k.replace(/^base_model\.model\./, ''), m.r]])),
  );
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: BASE_MODEL,
    r,
    lora_alpha: (first?.scale ?? 1) * r,
    target_modules: ['q_proj', 'v_proj'],
    lora_dropout: 0,
    bias: 'none',
    use_rslora: false,
    use_dora: false,
    ...(Object.keys(rankPattern).length > 0 ? { rank_pattern: rankPattern, alpha_pattern: rankPattern } : {}),
    inference_mode: true,
  };
}

/** metrics.diagnostics.modules: the native core's spectra of each module's ΔW = s·B·A. */
function diagnostics(modules: Record<string, LoraModule>) {
  return {
    modules: Object.fromEntries(
      Object.entries(modules).map(([name, m]) => {
        const s = spectra(m);
        const short = name.replace(/^base_model\.model\.model\./, '');
        return [short, { sigma: Array.from(s.sigma), erank: s.erank, srank: s.srank, kAt: s.kAt, fro: s.fro, spec: s.spec, nuc: s.nuc }];
      }),
    ),
  };
}

export class CatalogSeeder {
  readonly base: string;
  private readonly token: string;
  private readonly dir = mkdtempSync(join(tmpdir(), 'lowrank-web-seed-'));
  private files = 0;
  constructor(base: string, token: string) {
    this.base = base;
    this.token = token;
  }

  async call(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<unknown> {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': contentType }) },
      ...(body === undefined ? {} : { body: body instanceof Uint8Array ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  async repo(namespace: string, name: string, o: { visibility: string; description: string; taskTags: string[] }): Promise<void> {
    await this.call('POST', '/v1/repos', { namespace, name, baseModel: BASE_MODEL, ...o });
  }

  /** Uploads the files (skipping stored ones) and commits the version; returns its number. */
  async push(repo: string, p: Push): Promise<number> {
    const safetensors = join(this.dir, `adapter-${this.files++}.safetensors`);
    const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const [k, m] of Object.entries(p.modules)) {
      tensors[`${k}.lora_A.weight`] = { dtype: 'F32', shape: [m.r, m.in], data: m.A };
      tensors[`${k}.lora_B.weight`] = { dtype: 'F32', shape: [m.out, m.r], data: m.B };
    }
    writeSafetensors(safetensors, tensors, { format: 'pt' });
    const config = peftConfig(p.modules);
    const files: [string, Uint8Array][] = [
      ['adapter_config.json', new TextEncoder().encode(`${JSON.stringify(config, null, 2)}\n`)],
      ['adapter_model.safetensors', readFileSync(safetensors)],
    ];
    if (p.readme) files.push(['README.md', new TextEncoder().encode(p.readme)]);
    const refs = [];
    for (const [path, bytes] of files) {
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      const head = await fetch(`${this.base}/v1/repos/${repo}/blobs/${digest}`, {
        method: 'HEAD',
        headers: { authorization: `Bearer ${this.token}` },
      });
      if (head.status !== 200) await this.call('PUT', `/v1/repos/${repo}/blobs/${digest}`, bytes, 'application/octet-stream');
      refs.push({ path, digest, size: bytes.length });
    }
    const v = await this.call('POST', `/v1/repos/${repo}/versions`, {
      files: refs,
      config,
      method: p.method,
      rank: config.r,
      metrics: {
        diagnostics: diagnostics(p.modules),
        ...(p.lossCurve ? { lossCurve: p.lossCurve, finalEvalLoss: p.lossCurve.at(-1)?.evalLoss } : {}),
      },
      ...(p.methodMetadata ? { methodMetadata: p.methodMetadata } : {}),
      lineage: p.lineage,
      tags: p.tags ?? [],
    });
    if (typeof v !== 'object' || v === null || !('number' in v) || typeof v.number !== 'number')
      throw new Error(`commit of ${repo} gave no number`);
    return v.number;
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const card = (title: string, what: string) => `---
base_model: ${BASE_MODEL}
library_name: peft
tags: [lora, test]
---
# ${title}

${what}

| field | value |
| --- | --- |
| base | \`${BASE_MODEL}\` |

<script>window.__cardScriptRan = true</script>
<img src="x" onerror="window.__cardScriptRan = true" alt="a broken image">
`;

export async function seedCatalog(base: string, prisma: PrismaClient): Promise<Seeded> {
  const org = await prisma.organization.create({ data: { name: 'acme' } });
  const nlp = await prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const vision = await prisma.team.create({ data: { name: 'vision', organizationId: org.id } });
  const ada = await prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: nlp.id, role: 'maintainer' } } } });
  const bob = await prisma.user.create({ data: { handle: 'bob', memberships: { create: { teamId: vision.id, role: 'maintainer' } } } });
  const tokens = {
    ada: (await createToken(prisma, { userId: ada.id, name: 'web', scope: 'write' })).token,
    adaRead: (await createToken(prisma, { userId: ada.id, name: 'web-read', scope: 'read' })).token,
    bob: (await createToken(prisma, { userId: bob.id, name: 'web', scope: 'write' })).token,
  };
  const hf = { relation: 'trained_from', parentRef: `hf:${BASE_MODEL}` };
  const train = (seed: number, steps: number) =>
    trainToyLora({ seed, hidden: HIDDEN, r: 8, alpha: 16, moduleNames: MODULES, steps, lr: 1 });

  const s = new CatalogSeeder(base, tokens.ada);
  try {
    await s.repo('nlp', 'support-bot', { visibility: 'public', description: 'Answers support tickets', taskTags: ['support', 'chat'] });
    await s.repo('nlp', 'billing-bot', { visibility: 'internal', description: 'Explains invoices', taskTags: ['billing', 'chat'] });
    await s.repo('nlp', 'helpdesk', {
      visibility: 'internal',
      description: 'Support and billing in one adapter',
      taskTags: ['support', 'billing'],
    });
    await s.repo('nlp', 'task-generator', {
      visibility: 'internal',
      description: 'ICM-LoRA generator of support tasks',
      taskTags: ['generator'],
    });
    await s.repo('nlp', 'support-bot-generated', {
      visibility: 'internal',
      description: 'Sampled by the task generator',
      taskTags: ['support'],
    });
    await s.repo('nlp', 'support-bot-transfer', {
      visibility: 'internal',
      description: 'support-bot moved to another base',
      taskTags: ['support'],
    });

    const s1 = train(1, 60);
    await s.push('nlp/support-bot', {
      modules: s1.modules,
      method: 'lora',
      lineage: [hf],
      lossCurve: s1.lossCurve,
      readme: card('Support bot', 'A LoRA for support tickets.'),
    });
    const s2 = train(2, 120);
    await s.push('nlp/support-bot', {
      modules: s2.modules,
      method: 'lora',
      lineage: [hf],
      tags: ['prod'],
      lossCurve: s2.lossCurve,
      readme: card('Support bot', 'A LoRA for support tickets, trained twice as long.'),
    });
    const b1 = train(3, 120);
    await s.push('nlp/billing-bot', { modules: b1.modules, method: 'lora', lineage: [hf], lossCurve: b1.lossCurve });

    // A merge with two parents (PEFT cat: rank 8 + 8 = 16), then its rank reduction.
    const weights = [0.7, 0.3];
    const merged = await mergeAdapters([{ modules: s2.modules }, { modules: b1.modules }], { combination: 'cat', weights });
    await s.push('nlp/helpdesk', {
      modules: merged.modules,
      method: 'cat',
      lineage: [
        { relation: 'merged_from', parent: 'nlp/support-bot@2', weight: weights[0] ?? 0 },
        { relation: 'merged_from', parent: 'nlp/billing-bot@1', weight: weights[1] ?? 0 },
      ],
      methodMetadata: { kind: 'merge', method: 'cat', combination: 'cat', inputs: ['nlp/support-bot@2', 'nlp/billing-bot@1'], weights },
    });
    const reduced = reduceRank(merged.modules, { policy: { energy: 0.9 } });
    const energyKept = Object.values(reduced.report).map((r) => r.energyKept);
    await s.push('nlp/helpdesk', {
      modules: reduced.modules,
      method: 'rank-reduction',
      lineage: [{ relation: 'compressed_from', parent: 'nlp/helpdesk@1' }],
      tags: ['prod'],
      methodMetadata: {
        kind: 'compression',
        mode: 'rank-reduction',
        policy: 'energy 0.9',
        ranksBefore: Math.max(...Object.values(reduced.report).map((r) => r.rankBefore)),
        ranksAfter: Math.max(...Object.values(reduced.report).map((r) => r.rankAfter)),
        energyKept: Math.min(...energyKept),
        relError: Math.max(...Object.values(reduced.report).map((r) => r.relError)),
      },
    });
    // Trans-LoRA-shaped metadata (the transfer job is another issue's; these are the fields it records).
    const t1 = train(4, 60);
    await s.push('nlp/support-bot-transfer', {
      modules: t1.modules,
      method: 'lora',
      lineage: [{ relation: 'transferred_from', parent: 'nlp/support-bot@2' }],
      lossCurve: t1.lossCurve,
      methodMetadata: {
        kind: 'transfer',
        sourceBase: BASE_MODEL,
        targetBase: BASE_MODEL,
        taskDescription: 'Answer customer support tickets politely.',
        syntheticKept: 480,
        syntheticGenerated: 1000,
        discriminatorAccuracy: 0.9,
        teacherScore: 0.71,
        studentScore: 0.73,
      },
    });

    // An ICM-LoRA generator version (its own files) and an adapter it generated, with the
    // fields mode train-generator / generate record (worker/src/generate/).
    const generatorJson = new TextEncoder().encode('{"format":"lowrank-cvae-generator"}\n');
    const gDigest = `sha256:${createHash('sha256').update(generatorJson).digest('hex')}`;
    await s.call('PUT', `/v1/repos/nlp/task-generator/blobs/${gDigest}`, generatorJson, 'application/octet-stream');
    await s.call('POST', '/v1/repos/nlp/task-generator/versions', {
      files: [{ path: 'generator.json', digest: gDigest, size: generatorJson.length }],
      config: {},
      method: 'icm-lora-generator',
      lineage: [
        { relation: 'trained_from', parent: 'nlp/support-bot@1' },
        { relation: 'trained_from', parent: 'nlp/billing-bot@1' },
      ],
      methodMetadata: {
        kind: 'generator',
        embedder: 'sentence-transformers/all-MiniLM-L6-v2',
        latentSize: 32,
        beta: 0.005,
        familySize: 2,
        trainMse: 0.012,
        normalisationDigest: gDigest,
      },
    });
    const g1 = train(6, 60);
    await s.push('nlp/support-bot-generated', {
      modules: g1.modules,
      method: 'lora',
      lineage: [{ relation: 'generated_by', parent: 'nlp/task-generator@1' }],
      methodMetadata: {
        kind: 'generation',
        generatorVersion: 'nlp/task-generator@1',
        taskDescription: 'Answer refund questions in one sentence.',
        embeddingDigest: gDigest,
        embedder: 'sentence-transformers/all-MiniLM-L6-v2',
        seed: 2026,
        memorisation: { nearestMember: 'nlp/support-bot@1', cosine: 0.906, relativeL2: 0.438 },
      },
    });

    // A family of 55 versions around vision/backbone@1, for the graph at scale.
    const sv = new CatalogSeeder(base, tokens.bob);
    try {
      await sv.repo('vision', 'backbone', { visibility: 'internal', description: 'Root of a sweep', taskTags: ['sweep'] });
      await sv.repo('vision', 'sweep', { visibility: 'internal', description: 'Rank sweep children', taskTags: ['sweep'] });
      await sv.repo('vision', 'secret', { visibility: 'private', description: 'Private to vision', taskTags: ['secret'] });
      const root = train(5, 30);
      await sv.push('vision/backbone', { modules: root.modules, method: 'lora', lineage: [hf], lossCurve: root.lossCurve });
      const byRank = new Map<number, Record<string, LoraModule>>();
      for (let k = 1; k <= 8; k++) byRank.set(k, reduceRank(root.modules, { policy: { fixed: k } }).modules);
      for (let i = 1; i <= 54; i++) {
        const k = ((i - 1) % 8) + 1;
        const parent = i > 8 && i % 6 === 0 ? `vision/sweep@${i - 8}` : 'vision/backbone@1';
        await sv.push('vision/sweep', {
          modules: byRank.get(k) ?? {},
          method: 'rank-reduction',
          lineage: [{ relation: 'compressed_from', parent }],
        });
      }
      await sv.push('vision/secret', { modules: root.modules, method: 'lora', lineage: [hf] });
    } finally {
      sv.close();
    }
  } finally {
    s.close();
  }
  return { tokens };
}
