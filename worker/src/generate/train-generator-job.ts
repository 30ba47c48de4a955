/**
 * AdapterJob mode train-generator (ICM-LoRA, METHODS §4.2): fetch the family (adapters of
 * one base and layout), embed each member's task description, flatten and normalise the
 * training members with pooled per-key stats, train the CVAE in the native core (full
 * batch, AdamW, cosine, seeded), measure reconstruction error on held-out members (and
 * the training ones), and publish the generator as a version with trained_from lineage to
 * the members it learned from.
 */
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { type CvaeDims, cvaeDecode, cvaeEncode, cvaeInit, cvaeTrain } from '../native/cvae.ts';
import { type FetchedAdapter, fetchAdapter } from '../run/inputs.ts';
import type { JobOutcome, RunContext } from '../run/types.ts';
import { type FamilyMemberRecord, GENERATOR_FORMAT, type GeneratorConfig, writeGenerator } from './artifact.ts';
import { embeddingDigest, loadEmbedder } from './embedder.ts';
import {
  type AdapterTensors,
  checkLayout,
  denormalise,
  distance,
  flatten,
  layoutOf,
  pooledStats,
  readAdapterTensors,
  statsDigest,
} from './flatten.ts';

type Spec = AdapterJobSpecDefaulted;
type Training = NonNullable<Spec['generatorTraining']>;
type Member = Training['family'][number] & { where: string; fetched: FetchedAdapter; tensors: AdapterTensors };

/** Largest first/last layer (D' x hidden) the CPU generator takes: 2^28 floats (1 GiB). */
const MAX_LAYER = 2 ** 28;
/** Steps between progress reports (the native loop runs that many at a time). */
const CHUNK_STEPS = 100;

/** Adapter config keys that must agree across the family (the layout checks the tensors). */
const SAME_CONFIG = ['r', 'lora_alpha', 'use_rslora', 'use_dora', 'base_model_name_or_path'] as const;

function checkSpec(spec: Spec): Training {
  const t = spec.generatorTraining;
  if (!t) throw new LowrankError('invalid_spec', 'spec.generatorTraining: is required in mode train-generator');
  if (!t.family.some((m) => !m.heldOut))
    throw new LowrankError('invalid_spec', 'spec.generatorTraining.family: every member is heldOut; train on at least one');
  return t;
}

export async function runTrainGenerator(spec: Spec, ctx: RunContext): Promise<JobOutcome> {
  const t = checkSpec(spec);
  const field = 'spec.generatorTraining';
  await ctx.reporter.progress({ stage: 'loading family', total: t.family.length }, true);
  const members: Member[] = [];
  for (const [i, m] of t.family.entries()) {
    const where = `${field}.family[${i}].adapter`;
    const fetched = await fetchAdapter(m.adapter, where, ctx.client, ctx.workDir);
    members.push({ ...m, where, fetched, tensors: readAdapterTensors(fetched.dir, where) });
  }
  const first = members[0] as Member;
  const layout = layoutOf(first.tensors);
  for (const m of members) {
    checkLayout(layout, m.tensors, m.where);
    for (const k of SAME_CONFIG)
      if (JSON.stringify(m.tensors.config[k]) !== JSON.stringify(first.tensors.config[k]))
        throw new LowrankError(
          'invalid_spec',
          `${m.where}: adapter_config.json ${k} is ${JSON.stringify(m.tensors.config[k])}, the family's (member 0) is ${JSON.stringify(first.tensors.config[k])}`,
        );
  }
  const baseModel = String(first.tensors.config.base_model_name_or_path ?? spec.baseModel?.name ?? '');
  if (spec.baseModel?.name && spec.baseModel.name !== baseModel)
    throw new LowrankError('invalid_spec', `spec.baseModel.name: ${spec.baseModel.name}, but the family's adapters are for ${baseModel}`);
  if (!baseModel) throw new LowrankError('invalid_spec', 'spec.baseModel.name: the family names no base model; set it');

  await ctx.reporter.progress({ stage: 'embedding task descriptions' }, true);
  const embedder = await loadEmbedder(t.embedder, `${field}.embedder`);
  const conds: Float32Array[] = [];
  for (const m of members) conds.push(await embedder.embed(m.taskDescription));

  const train = members.map((m, i) => ({ m, i })).filter(({ m }) => !m.heldOut);
  const stats = pooledStats(
    layout,
    train.map(({ m }) => m.tensors),
  );
  const xs = members.map((m) => flatten(layout, stats, m.tensors));
  const dims: CvaeDims = { input: layout.padded, cond: embedder.dim, hidden: t.hiddenSize, latent: t.latentSize };
  if (dims.input * dims.hidden > MAX_LAYER)
    throw new LowrankError(
      'invalid_spec',
      `${field}.hiddenSize: the adapters flatten to ${dims.input} values; ${dims.input} x ${dims.hidden} exceeds the generator's ${MAX_LAYER}-value layer limit (lower hiddenSize, or the family's rank or targets)`,
    );
  const n = train.length;
  const x = new Float32Array(n * dims.input);
  const c = new Float32Array(n * dims.cond);
  train.forEach(({ i }, row) => {
    x.set(xs[i] as Float32Array, row * dims.input);
    c.set(conds[i] as Float32Array, row * dims.cond);
  });

  const params = cvaeInit(dims, spec.seed);
  const state = { params, m: params.map((p) => new Float32Array(p.length)), v: params.map((p) => new Float32Array(p.length)), step: 0 };
  const opts = {
    lr: t.lr,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: t.weightDecay,
    beta: t.beta,
    totalSteps: t.steps,
    seed: spec.seed,
  };
  const curve: { step: number; mse: number; kl: number }[] = [];
  let last = { mse: Number.NaN, kl: Number.NaN, total: Number.NaN };
  const started = performance.now();
  while (state.step < t.steps) {
    const losses = cvaeTrain(dims, state, n, x, c, { ...opts, steps: CHUNK_STEPS });
    last = losses.at(-1) ?? last;
    if (curve.length === 0 && losses[0]) curve.push({ step: 1, mse: losses[0].mse, kl: losses[0].kl });
    curve.push({ step: state.step, mse: last.mse, kl: last.kl });
    const seconds = (performance.now() - started) / 1000;
    await ctx.reporter.progress({
      stage: 'training generator',
      step: state.step,
      total: t.steps,
      loss: last.total,
      mse: last.mse,
      kl: last.kl,
      etaSeconds: Math.round((seconds / state.step) * (t.steps - state.step)),
    });
  }

  // Reconstruction: through the encoder mean (x -> μ -> x̂), and from the prior mean z = 0 as
  // mode generate samples at temperature 0; in parameter space, relative L2.
  await ctx.reporter.progress({ stage: 'evaluating generator' }, true);
  const recon = members.map((m, i) => {
    const xi = xs[i] as Float32Array;
    const ci = conds[i] as Float32Array;
    const { mu } = cvaeEncode(dims, state.params, 1, xi, ci);
    const viaMean = cvaeDecode(dims, state.params, 1, mu, ci);
    const fromPrior = cvaeDecode(dims, state.params, 1, new Float32Array(dims.latent), ci);
    const raw = denormalise(layout, stats, xi);
    let se = 0;
    for (let k = 0; k < layout.length; k++) se += ((viaMean[k] as number) - (xi[k] as number)) ** 2;
    return {
      member: i,
      heldOut: m.heldOut,
      taskDescription: m.taskDescription,
      normalisedMse: se / layout.length,
      relativeL2: distance(denormalise(layout, stats, viaMean), raw).relativeL2,
      priorRelativeL2: distance(denormalise(layout, stats, fromPrior), raw).relativeL2,
    };
  });
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined);
  const heldOut = recon.filter((r) => r.heldOut);
  const trainRecon = recon.filter((r) => !r.heldOut);

  const refOf = (m: Member) => m.fetched.parent ?? m.fetched.parentRef ?? m.fetched.dir;
  const family: FamilyMemberRecord[] = members.map((m, i) => ({
    ref: refOf(m),
    taskDescription: m.taskDescription,
    heldOut: m.heldOut,
    embeddingDigest: embeddingDigest(conds[i] as Float32Array),
  }));
  const training = {
    steps: t.steps,
    lr: t.lr,
    weightDecay: t.weightDecay,
    schedule: 'cosine',
    optimizer: 'adamw',
    seed: spec.seed,
    trainMse: last.mse,
    trainKl: last.kl,
    lossCurve: curve,
    seconds: (performance.now() - started) / 1000,
  };
  const config: GeneratorConfig = {
    format: GENERATOR_FORMAT,
    model: 'cvae-mlp',
    dims,
    beta: t.beta,
    layout,
    stats,
    statsDigest: statsDigest(stats),
    embedder: { id: embedder.id, dim: embedder.dim, source: embedder.source },
    baseModel,
    adapterConfig: first.tensors.config,
    family,
    trainRows: train.map(({ i }) => i),
    training,
  };
  const dir = join(ctx.workDir, 'output', 'generator');
  writeGenerator(dir, { config, params: state.params, familyX: x });
  const methodMetadata = {
    kind: 'generator',
    model: 'cvae-mlp',
    embedder: embedder.id,
    embedderSource: embedder.source,
    latentSize: dims.latent,
    hiddenSize: dims.hidden,
    inputSize: layout.length,
    paddedSize: layout.padded,
    beta: t.beta,
    familySize: members.length,
    trainMembers: n,
    heldOutMembers: heldOut.length,
    family,
    normalisationDigest: config.statsDigest,
    adapterRank: first.tensors.config.r,
    targets: first.tensors.config.target_modules,
    ...training,
    reconstruction: recon,
  };
  const metrics = {
    trainMse: last.mse,
    trainKl: last.kl,
    trainRelativeL2: mean(trainRecon.map((r) => r.relativeL2)),
    ...(heldOut.length
      ? {
          heldOutNormalisedMse: mean(heldOut.map((r) => r.normalisedMse)),
          heldOutRelativeL2: mean(heldOut.map((r) => r.relativeL2)),
          heldOutPriorRelativeL2: mean(heldOut.map((r) => r.priorRelativeL2)),
        }
      : {}),
  };
  return {
    dir,
    baseModel,
    method: 'icm-lora-generator',
    methodMetadata,
    metrics,
    lineage: train.map(({ m }) => ({
      relation: 'trained_from',
      ...(m.fetched.parent ? { parent: m.fetched.parent } : { parentRef: m.fetched.parentRef ?? `file:${m.fetched.dir}` }),
      parameters: { role: 'family member', taskDescription: m.taskDescription },
    })),
  };
}
