/**
 * CompressionJob on an adapter, mode rank-reduction (METHODS §3.1): factored SVD per
 * module, ranks by the spec's policy (fixed, energy, budget) capped by a serving slot,
 * re-factored at scale 1. The version records ranks before/after, energy kept and the
 * relative error, per module and in summary.
 */
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { CompressionJobSpecDefaulted } from '@lowrank/crds/types';
import { type RankPolicy, reduceRank } from '../native/compress.ts';
import { writePeftAdapter } from '../peft/adapter-dir.ts';
import { runCompressMode } from './compress-base-job.ts';
import { fetchAdapter } from './inputs.ts';
import type { JobOutcome, RunContext } from './types.ts';

function policyOf(spec: CompressionJobSpecDefaulted): { policy?: RankPolicy; serveMaxRank?: number } {
  const p = spec.rankPolicy ?? {};
  const policy: RankPolicy | undefined = p.fixed
    ? { fixed: p.fixed.rank }
    : p.energy
      ? { energy: p.energy.threshold }
      : p.budget
        ? { budget: { params: p.budget.params, minRank: p.budget.minRank, ...(p.budget.maxRank ? { maxRank: p.budget.maxRank } : {}) } }
        : undefined;
  const caps = [p.serve?.maxRank, spec.servingMaxRank].filter((x): x is NonNullable<typeof x> => x !== undefined);
  return { ...(policy ? { policy } : {}), ...(caps.length ? { serveMaxRank: Math.min(...caps) } : {}) };
}

export async function runCompress(spec: CompressionJobSpecDefaulted, ctx: RunContext): Promise<JobOutcome> {
  if (spec.mode !== 'rank-reduction') return runCompressMode(spec, ctx);
  if (!spec.source.adapter) throw new LowrankError('invalid_spec', 'spec.source.adapter: rank-reduction needs the adapter to compress');
  await ctx.reporter.progress({ stage: 'fetching input', step: 0, total: 1 });
  const input = await fetchAdapter(spec.source.adapter, 'spec.source.adapter', ctx.client, ctx.workDir);
  const options = policyOf(spec);
  if (!options.policy && options.serveMaxRank === undefined)
    throw new LowrankError('invalid_spec', 'spec.rankPolicy: give fixed, energy, budget or serve (or spec.servingMaxRank)');
  await ctx.reporter.progress({ stage: 'reducing rank', step: 0, total: 1 }, true);
  const started = performance.now();
  const { modules, report } = reduceRank(input.adapter.modules, {
    ...options,
    split: spec.refactor === 'b-heavy' ? 'b_heavy' : 'balanced',
  });
  const seconds = (performance.now() - started) / 1000;
  const baseModel = String(input.adapter.config.base_model_name_or_path ?? 'unknown');
  const dir = join(ctx.workDir, 'output', 'adapter');
  writePeftAdapter(dir, modules, { base_model_name_or_path: baseModel });
  const rows = Object.values(report);
  const paramsOf = (rank: (r: (typeof rows)[number]) => number) =>
    Object.entries(report).reduce(
      (n, [name, r]) => n + rank(r) * ((input.adapter.modules[name]?.in ?? 0) + (input.adapter.modules[name]?.out ?? 0)),
      0,
    );
  const perModule = Object.fromEntries(
    Object.entries(report).map(([n, r]) => [
      n,
      { rankBefore: r.rankBefore, rankAfter: r.rankAfter, energyKept: r.energyKept, relError: r.relError },
    ]),
  );
  return {
    dir,
    baseModel,
    method: 'rank-reduction',
    methodMetadata: {
      kind: 'compression',
      mode: spec.mode,
      source: input.parent ?? input.parentRef,
      policy: options.policy ?? null,
      serveMaxRank: options.serveMaxRank ?? null,
      refactor: spec.refactor,
      ranksBefore: Math.max(...rows.map((r) => r.rankBefore)),
      ranksAfter: Math.max(...rows.map((r) => r.rankAfter)),
      energyKept: Math.min(...rows.map((r) => r.energyKept)),
      relError: Math.max(...rows.map((r) => r.relError)),
      modules: perModule,
    },
    metrics: {
      paramsBefore: paramsOf((r) => r.rankBefore),
      paramsAfter: paramsOf((r) => r.rankAfter),
      energyKeptMin: Math.min(...rows.map((r) => r.energyKept)),
      relErrorMax: Math.max(...rows.map((r) => r.relError)),
      compressSeconds: Math.round(seconds * 1000) / 1000,
    },
    lineage: [
      {
        relation: 'compressed_from',
        ...(input.parent ? { parent: input.parent } : { parentRef: input.parentRef as string }),
        parameters: {
          mode: spec.mode,
          ...(options.policy ? { policy: options.policy } : {}),
          ...(options.serveMaxRank ? { serveMaxRank: options.serveMaxRank } : {}),
        },
      },
    ],
  };
}
