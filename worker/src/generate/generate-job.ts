/**
 * AdapterJob mode generate (ICM-LoRA, METHODS §4.2): embed the task description with the
 * generator's embedder, draw z ~ N(0, temperature² I) from the job seed, decode, cut to D,
 * de-normalise with the generator's pooled stats and write a PEFT adapter with the family's
 * adapter_config.json. With samples > 1 each draw is scored on validationDataset (task loss
 * on the base) and the best kept. Recorded: generated_by lineage to the generator version,
 * the description and its embedding digest, seed, scores, and the memorisation check
 * (cosine and relative L2 to the nearest training adapter).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { pull } from '@lowrank/registry-api/cli/transfer';
import { cvaeDecode } from '../native/cvae.ts';
import { philox, streamId } from '../native/linalg.ts';
import { resolveBase } from '../run/base-model.ts';
import { fetchAdapter } from '../run/inputs.ts';
import type { JobOutcome, RunContext } from '../run/types.ts';
import { readGenerator } from './artifact.ts';
import { embeddingDigest, loadEmbedder } from './embedder.ts';
import { denormalise, distance, writeAdapter } from './flatten.ts';
import { type Scorer, taskScorer } from './score.ts';

type Spec = AdapterJobSpecDefaulted;
type Generate = NonNullable<Spec['generate']>;

function refuse(field: string, what: string): never {
  throw new LowrankError('invalid_spec', `${field}: ${what}`);
}

function checkSpec(spec: Spec): Generate {
  const g = spec.generate ?? refuse('spec.generate', 'is required in mode generate');
  if (g.condition.type !== 'text_embedding')
    refuse('spec.generate.condition.type', `${g.condition.type} is not supported by this worker yet; text_embedding is`);
  if (g.samples > 1 && !g.validationDataset) refuse('spec.generate.validationDataset', 'is required when samples is above 1');
  const v = g.validationDataset;
  if (v && !v.path) {
    if (v.uri?.startsWith('file://')) v.path = new URL(v.uri).pathname;
    else
      refuse(
        'spec.generate.validationDataset',
        `give path (a local JSONL file or directory); ${v.uri ?? 'the uri'} is not fetched by this worker`,
      );
  }
  if (g.referenceAdapter && !v) refuse('spec.generate.referenceAdapter', 'needs validationDataset (it is scored there)');
  if (v && !spec.baseModel) refuse('spec.baseModel', 'is needed to score samples on validationDataset (the base the generator is for)');
  return g;
}

/** Hash of a directory's files (path + bytes, sorted): the lineage record of an unregistered generator. */
function dirDigest(dir: string): string {
  const h = createHash('sha256');
  for (const f of readdirSync(dir).sort()) {
    if (!statSync(join(dir, f)).isFile()) continue;
    h.update(f).update(readFileSync(join(dir, f)));
  }
  return `sha256:${h.digest('hex')}`;
}

async function fetchGenerator(g: Generate, ctx: RunContext): Promise<{ dir: string; ref: string; parent?: string; parentRef?: string }> {
  const ref = g.generator;
  if (ref.repository) {
    if (!ctx.client) refuse('spec.generate.generator', 'names a registry repository, but no registry is configured');
    const wanted = ref.version !== undefined ? String(ref.version) : (ref.tag ?? 'latest');
    const v = await ctx.client.json<{ number: number }>('GET', `/v1/repos/${ref.repository}/versions/${encodeURIComponent(wanted)}`);
    const dir = ref.path ? resolve(ref.path) : join(ctx.workDir, 'inputs', ref.repository, String(v.number));
    await pull(ctx.client, ref.repository, String(v.number), dir);
    const parent = `${ref.repository}@${v.number}`;
    return { dir, ref: parent, parent };
  }
  const dir = resolve(ref.path ?? refuse('spec.generate.generator', 'give repository or path'));
  const parentRef = `file:${dir}#${dirDigest(dir)}`;
  return { dir, ref: parentRef, parentRef };
}

export async function runGenerate(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const g = checkSpec(spec);
  await ctx.reporter.progress({ stage: 'loading generator' }, true);
  const src = await fetchGenerator(g, ctx);
  const gen = readGenerator(src.dir, 'spec.generate.generator');
  const { config } = gen;
  if (spec.baseModel?.name && spec.baseModel.name !== config.baseModel)
    refuse('spec.baseModel.name', `${spec.baseModel.name}, but the generator makes adapters for ${config.baseModel}`);
  const embedderId = g.condition.embedder ?? config.embedder.id;
  if (embedderId !== config.embedder.id)
    refuse(
      'spec.generate.condition.embedder',
      `${embedderId}, but the generator was trained on ${config.embedder.id} embeddings; unset it or use that one`,
    );
  const embedder = await loadEmbedder(embedderId, 'spec.generate.condition.embedder');
  if (embedder.dim !== config.dims.cond)
    throw new LowrankError(
      'invalid_file',
      `spec.generate.generator: condition size ${config.dims.cond} but ${embedderId} gives ${embedder.dim}`,
    );
  const cond = await embedder.embed(g.taskDescription);
  const digest = embeddingDigest(cond);

  let scorer: Scorer | undefined;
  let baseLoss: number | undefined;
  if (g.validationDataset && spec.baseModel) {
    await ctx.reporter.progress({ stage: 'loading base model' }, true);
    const base = await resolveBase(spec.baseModel, ctx.client, ctx.workDir);
    const v = g.validationDataset as typeof g.validationDataset & { path: string };
    scorer = await taskScorer(base.dir, v, spec.seed);
    baseLoss = await scorer.loss(undefined);
  }
  let reference: { ref: string; loss: number } | undefined;
  if (g.referenceAdapter && scorer) {
    const r = await fetchAdapter(g.referenceAdapter, 'spec.generate.referenceAdapter', ctx.client, ctx.workDir);
    reference = { ref: r.parent ?? r.parentRef ?? r.dir, loss: await scorer.loss(r.dir) };
  }

  // Training adapters in parameter space, for the memorisation check.
  const { layout, stats, dims } = config;
  const trainRaw = config.trainRows.map((_, r) => denormalise(layout, stats, gen.familyX.subarray(r * dims.input, (r + 1) * dims.input)));

  const root = join(ctx.workDir, 'output', 'samples');
  rmSync(root, { recursive: true, force: true });
  const samples = [];
  for (let s = 0; s < g.samples; s++) {
    await ctx.reporter.progress({ stage: 'sampling', step: s + 1, total: g.samples }, true);
    const z = Float32Array.from(philox(spec.seed, streamId(`icm-lora:z:${s}`), dims.latent, 'normal'), (v) => v * g.temperature);
    const raw = denormalise(layout, stats, cvaeDecode(dims, gen.params, 1, z, cond));
    const dir = join(root, String(s));
    mkdirSync(dir, { recursive: true });
    writeAdapter(dir, layout, raw, config.adapterConfig);
    let nearest = { member: -1, cosine: Number.NEGATIVE_INFINITY, relativeL2: Number.POSITIVE_INFINITY };
    trainRaw.forEach((t, r) => {
      const d = distance(raw, t);
      if (d.cosine > nearest.cosine) nearest = { member: config.trainRows[r] as number, ...d };
    });
    const score = scorer ? await scorer.loss(dir) : undefined;
    samples.push({ sample: s, dir, validationLoss: score, nearest });
  }
  const best = scorer
    ? samples.reduce((a, b) => ((b.validationLoss as number) < (a.validationLoss as number) ? b : a))
    : (samples[0] as (typeof samples)[number]);
  const near = config.family[best.nearest.member];
  const memorisation = {
    nearestMember: near?.ref,
    nearestTask: near?.taskDescription,
    cosine: best.nearest.cosine,
    relativeL2: best.nearest.relativeL2,
  };
  const methodMetadata = {
    kind: 'generation',
    generatorVersion: src.ref,
    taskDescription: g.taskDescription,
    taskDescriptionDigest: `sha256:${createHash('sha256').update(g.taskDescription).digest('hex')}`,
    embeddingDigest: digest,
    embedder: embedder.id,
    conditionType: g.condition.type,
    seed: spec.seed,
    temperature: g.temperature,
    samples: g.samples,
    chosenSample: best.sample,
    ...(scorer
      ? { validationDatasetDigest: scorer.digest, validationRecords: scorer.records, sampleScores: samples.map((s) => s.validationLoss) }
      : {}),
    latentSize: dims.latent,
    beta: config.beta,
    normalisationDigest: config.statsDigest,
    learnedFrom: config.trainRows.map((i) => config.family[i]?.ref),
    generatorTraining: { trainMse: config.training.trainMse, trainKl: config.training.trainKl },
    memorisation,
    ...(reference ? { referenceAdapter: reference.ref } : {}),
    method: config.adapterConfig.use_dora ? 'dora' : config.adapterConfig.use_rslora ? 'rslora' : 'lora',
    rank: config.adapterConfig.r,
    alpha: config.adapterConfig.lora_alpha,
    targets: config.adapterConfig.target_modules,
  };
  const metrics = {
    ...(best.validationLoss === undefined
      ? {}
      : { validationLoss: best.validationLoss, validationPerplexity: Math.exp(best.validationLoss) }),
    ...(baseLoss === undefined ? {} : { baseValidationLoss: baseLoss, baseValidationPerplexity: Math.exp(baseLoss) }),
    ...(reference ? { referenceValidationLoss: reference.loss, referenceValidationPerplexity: Math.exp(reference.loss) } : {}),
    memorisationCosine: memorisation.cosine,
    memorisationRelativeL2: memorisation.relativeL2,
  };
  return {
    dir: best.dir,
    baseModel: config.baseModel,
    method: methodMetadata.method,
    methodMetadata,
    metrics,
    lineage: [
      {
        relation: 'generated_by',
        ...(src.parent ? { parent: src.parent } : { parentRef: src.parentRef as string }),
        parameters: { seed: spec.seed, temperature: g.temperature, embeddingDigest: digest },
      },
    ],
  };
}
