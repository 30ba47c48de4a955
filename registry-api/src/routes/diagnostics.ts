/**
 * getDiagnostics (what post-processing computed for a version: spectra, effective rank,
 * norms) and compareVersions (two versions side by side: config, metrics and method
 * metadata differences, files, and the spectra of shared modules when both are computed).
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler, Response } from 'express';
import type { VersionDiagnostics } from '../generated/prisma/client.ts';
import { authorize, type Context, paramsOf, principalOf, repositoryFor } from './context.ts';
import { resolveVersion } from './versions.ts';
import { versionView } from './views.ts';

type Diagnostics = { state: 'pending' } | { state: 'ready'; computedAt: string; [k: string]: unknown };

const diagnosticsView = (row: VersionDiagnostics | null): Diagnostics =>
  row ? { state: 'ready', computedAt: row.computedAt.toISOString(), ...(row.data as Record<string, unknown>) } : { state: 'pending' };

async function versionAt(ctx: Context, res: Response) {
  const repo = await repositoryFor(ctx, res, 'read');
  return resolveVersion(ctx, repo, paramsOf(res).ref as string);
}

export function getDiagnostics(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const version = await versionAt(ctx, res);
    res.json(diagnosticsView(await ctx.prisma.versionDiagnostics.findUnique({ where: { versionId: version.id } })));
  };
}

/** Keys whose values differ (deep, by JSON), with both values; keys on one side only count as differing. */
function diff(a: unknown, b: unknown): { key: string; a: unknown; b: unknown }[] {
  const x = (a ?? {}) as Record<string, unknown>;
  const y = (b ?? {}) as Record<string, unknown>;
  return [...new Set([...Object.keys(x), ...Object.keys(y)])]
    .sort()
    .filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k]))
    .map((k) => ({ key: k, a: x[k] ?? null, b: y[k] ?? null }));
}

export function compareVersions(ctx: Context): RequestHandler {
  return async (req, res) => {
    const a = await versionAt(ctx, res);
    const m = /^([a-z0-9-]+)\/([a-z0-9-]+)@([A-Za-z0-9._-]+)$/.exec(String(req.query.with));
    if (!m) throw new LowrankError('invalid_request', 'with: name the other version as namespace/name@version-or-tag');
    const other = await ctx.prisma.repository.findUnique({
      where: { namespace_name: { namespace: m[1] as string, name: m[2] as string } },
    });
    if (!other) throw new LowrankError('not_found', `repository ${m[1]}/${m[2]} not found`);
    authorize(principalOf(res), 'read', { teamId: other.teamId, visibility: other.visibility }, `repository ${m[1]}/${m[2]}`);
    const b = await resolveVersion(ctx, other, m[3] as string);
    const [da, db] = await Promise.all(
      [a.id, b.id].map((id) => ctx.prisma.versionDiagnostics.findUnique({ where: { versionId: id } }).then(diagnosticsView)),
    );
    const filesA = new Map(a.files.map((f) => [f.path, f.blobDigest]));
    const filesB = new Map(b.files.map((f) => [f.path, f.blobDigest]));
    const modulesOf = (d: Diagnostics | undefined) =>
      d?.state === 'ready' ? ((d as { modules?: Record<string, { sigma: number[]; erank: number }> }).modules ?? {}) : undefined;
    const ma = modulesOf(da);
    const mb = modulesOf(db);
    const spectra =
      ma && mb
        ? Object.fromEntries(
            [...new Set([...Object.keys(ma), ...Object.keys(mb)])]
              .sort()
              .map((n) => [
                n,
                { a: ma[n]?.sigma ?? null, b: mb[n]?.sigma ?? null, erankA: ma[n]?.erank ?? null, erankB: mb[n]?.erank ?? null },
              ]),
          )
        : null;
    res.json({
      a: versionView(a),
      b: versionView(b),
      config: diff(a.config, b.config),
      metrics: diff(a.metrics, b.metrics),
      methodMetadata: diff(a.methodMetadata, b.methodMetadata),
      files: {
        same: [...filesA].filter(([p, d]) => filesB.get(p) === d).map(([p]) => p),
        changed: [...filesA].filter(([p, d]) => filesB.has(p) && filesB.get(p) !== d).map(([p]) => p),
        onlyA: [...filesA.keys()].filter((p) => !filesB.has(p)),
        onlyB: [...filesB.keys()].filter((p) => !filesA.has(p)),
      },
      diagnostics: { a: da?.state, b: db?.state },
      spectra,
    });
  };
}
