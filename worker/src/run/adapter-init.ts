/**
 * The train job's adapter initialisation by method type (METHODS §1): plain LoRA/rsLoRA/
 * DoRA draws A and zeroes B; PiSSA (§1.4) change the base and are
 * exported for the ORIGINAL base (§0.5), so PEFT loads the pushed adapter on the
 * unmodified model. The init sets the adapter (and any base change) on the model and says
 * how the trained adapter is exported.
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { type LoraModule, philox, streamId } from '../native/linalg.ts';
import { initLora, type Projection, type TokenBatch, type TrainModel } from '../native/train.ts';
import { type EvaBatch, evaInit } from '../native/train-eva.ts';
import { doraMagnitudes, exportForOriginalBase, pissaInit } from '../native/train-init.ts';
import { type LoraGaOptions, loraGaInit } from '../native/train-lora-ga.ts';
import { exportLoraSb, loraSbInit } from '../native/train-lora-sb.ts';

type Method = NonNullable<AdapterJobSpecDefaulted['method']>;

/** What the pushed adapter_config.json says besides the factors (writeTrainedAdapter's fields). */
export interface ExportedAdapter {
  modules: Record<string, LoraModule>;
  rank: number;
  alpha: number;
  rankPattern?: Record<string, number> | undefined;
  alphaPattern?: Record<string, number> | undefined;
  /** target_modules when not the method's (EVA leaves out the modules it gives rank 0). */
  targets?: string[];
  /** use_rslora when not the method's (LoRA-SB exports at scale 1). */
  useRslora?: boolean;
}

export interface AdapterInit {
  /** How the trained adapter is published: for the original base, with its config fields. */
  exportAdapter(trained: Record<string, LoraModule>): ExportedAdapter;
  /** The init recipe for the version's metadata (the registry keeps recipe + seed, §0.5). */
  recipe: Record<string, unknown>;
}

export interface InitContext {
  model: TrainModel;
  method: Method;
  targets: Projection[];
  alpha: number;
  useRslora: boolean;
  seed: number;
  /** The idx-th batch of `size` training rows in a seeded order of its own (for gradient estimates). */
  calibration(purpose: string, idx: number, size: number): TokenBatch & { attention: Uint8Array };
  /** Training rows (calibration batches of `size` cover them in ceil(rows / size) batches). */
  rows: number;
  /** The learning rate of the first warmup step (0 without warmup): LoRA-SB's η₀. */
  firstWarmupLr: number;
}

function refuse(field: string, what: string): never {
  throw new LowrankError('invalid_spec', `${field}: ${what}`);
}

/** A TypeError from the init's argument checks is a spec error naming the field. */
function asSpec<T>(field: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof TypeError) refuse(field, err.message);
    throw err;
  }
}

const scaled = (p: Record<string, number> | undefined, k: number) =>
  p === undefined ? undefined : Object.fromEntries(Object.entries(p).map(([key, v]) => [key, v * k]));

/**
 * §0.5's export config: rank 2r, α' = 2α (rsLoRA √2·α) and patterns doubled, so each
 * module keeps its scale at twice the rank.
 */
function doubled(method: Method, alpha: number, useRslora: boolean, modules: Record<string, LoraModule>): ExportedAdapter {
  const k = useRslora ? Math.SQRT2 : 2;
  return {
    modules,
    rank: 2 * method.rank,
    alpha: k * alpha,
    rankPattern: scaled(method.rankPattern as Record<string, number> | undefined, 2),
    alphaPattern: scaled(method.alphaPattern as Record<string, number> | undefined, k),
  };
}

export async function initAdapter(ctx: InitContext): Promise<AdapterInit> {
  const { model, method, targets, alpha, useRslora, seed } = ctx;
  const common = {
    r: method.rank,
    alpha,
    targets,
    useRslora,
    ...(method.layersToTransform ? { layers: method.layersToTransform } : {}),
    ...(method.rankPattern ? { rankPattern: method.rankPattern as Record<string, number> } : {}),
    ...(method.alphaPattern ? { alphaPattern: method.alphaPattern as Record<string, number> } : {}),
  };
  const plain = (trained: Record<string, LoraModule>): ExportedAdapter => ({
    modules: trained,
    rank: method.rank,
    alpha,
    rankPattern: method.rankPattern as Record<string, number> | undefined,
    alphaPattern: method.alphaPattern as Record<string, number> | undefined,
  });

  if (method.type === 'pissa') {
    const niter = method.pissa?.niter ?? 0;
    const oversample = method.pissa?.oversampling ?? 0;
    const initial = asSpec('spec.method', () => pissaInit(model, { ...common, niter, oversample, seed }));
    return {
      exportAdapter: (trained) => doubled(method, alpha, useRslora, exportForOriginalBase(trained, initial)),
      recipe: { init: 'pissa', svd: niter > 0 ? { kind: 'randomized', niter, oversample, seed } : { kind: 'exact' } },
    };
  }

  if (method.type === 'lora-ga') {
    const g: Partial<NonNullable<Method['loraGa']>> = method.loraGa ?? {};
    const o: LoraGaOptions = {
      ...common,
      direction: g.direction ?? 'ArB2r',
      scale: g.scale ?? 'stable',
      gamma: g.gamma ?? 16,
      variant: g.variant ?? 'reference',
      seed,
    };
    const batches = g.batches ?? 64;
    const size = g.batchSize ?? 2;
    let initial: Record<string, LoraModule>;
    try {
      initial = await loraGaInit(model, o, batches, (i) => ctx.calibration('lora-ga', i, size));
    } catch (err) {
      if (err instanceof TypeError) refuse('spec.method', err.message);
      throw err;
    }
    const { direction, scale, gamma, variant } = o;
    return {
      exportAdapter: (trained) => doubled(method, alpha, useRslora, exportForOriginalBase(trained, initial)),
      recipe: { init: 'lora-ga', direction, scale, gamma, variant, batches, batchSize: size, seed },
    };
  }

  if (method.type === 'eva') {
    const e: Partial<NonNullable<Method['eva']>> = method.eva ?? {};
    const size = e.batchSize ?? 4;
    // PEFT cycles its dataloader until every module converges; we stop at eva.batches.
    const maxBatches = e.batches ?? 10_000;
    const distinct = Math.max(1, Math.ceil(ctx.rows / size));
    const { layers, rankPattern, alphaPattern } = common;
    let res: Awaited<ReturnType<typeof evaInit>>;
    try {
      res = await evaInit(
        model,
        {
          r: method.rank,
          alpha,
          targets,
          useRslora,
          ...(layers ? { layers } : {}),
          ...(rankPattern ? { rankPattern } : {}),
          ...(alphaPattern ? { alphaPattern } : {}),
          rho: e.rho ?? 2,
          tau: e.tau ?? 0.99,
          whiten: e.whiten ?? false,
          adjustScalingFactors: e.adjustScalingFactors ?? true,
          useLabelMask: e.useLabelMask ?? true,
          seed,
        },
        distinct,
        maxBatches,
        (i): EvaBatch => ctx.calibration('eva', i, size),
      );
    } catch (err) {
      if (err instanceof TypeError) refuse('spec.method.eva', err.message);
      throw err;
    }
    model.setAdapter(res.modules);
    const kept = Object.keys(res.modules).sort();
    return {
      exportAdapter: (trained) => ({
        modules: trained,
        rank: method.rank,
        alpha,
        rankPattern: res.rankPattern,
        alphaPattern: res.alphaPattern,
        ...(res.dropped.length ? { targets: kept } : {}),
      }),
      recipe: {
        init: 'eva',
        ...e,
        calibrationBatches: res.batches,
        ranks: Object.fromEntries(kept.map((k) => [k, (res.modules[k] as LoraModule).r])),
        dropped: res.dropped,
      },
    };
  }

  if (method.type === 'lora-sb') {
    const sb: Partial<NonNullable<Method['loraSb']>> = method.loraSb ?? {};
    const samples = sb.samples ?? 50;
    const niter = sb.niter ?? 10;
    const { layers, rankPattern } = common;
    try {
      await loraSbInit(
        model,
        {
          r: method.rank,
          targets,
          ...(layers ? { layers } : {}),
          ...(rankPattern ? { rankPattern } : {}),
          lr0: ctx.firstWarmupLr,
          niter,
          seed,
        },
        samples,
        (i) => ctx.calibration('lora-sb', i, 1),
      );
    } catch (err) {
      if (err instanceof TypeError) refuse('spec.method', err.message);
      throw err;
    }
    return {
      // Plain LoRA, exactly: lora_A = R A, lora_B = B, α = r (scale 1).
      exportAdapter: (trained) => ({
        modules: exportLoraSb(trained, model.cores()),
        rank: method.rank,
        alpha: method.rank,
        rankPattern,
        alphaPattern: rankPattern,
        useRslora: false,
      }),
      recipe: { init: 'lora-sb', samples, niter, lr0: ctx.firstWarmupLr, seed },
    };
  }

  const modules = asSpec('spec.method', () => initLora(model.config, { ...common, seed }));
  // PEFT's init_lora_weights="gaussian": A ~ N(0, 1/r²), from its own Philox stream.
  if (method.init === 'gaussian')
    for (const [path, m] of Object.entries(modules))
      m.A = Float32Array.from(philox(seed, streamId(`lora_init:${path}:A:gaussian`), m.A.length, 'normal'), (x) => x / m.r);
  // DoRA (PEFT): the magnitude starts at the row norm of W (B = 0).
  model.setAdapter(modules, method.type === 'dora' ? doraMagnitudes(model, modules) : {});
  return { exportAdapter: plain, recipe: { init: method.init } };
}
