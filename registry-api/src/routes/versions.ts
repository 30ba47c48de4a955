/** listVersions, commitVersion, getVersion. */
import { type FieldError, LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler, Response } from 'express';
import type { VersionCommit } from '../api-types.ts';
import { decide } from '../auth/policy.ts';
import type { Repository } from '../generated/prisma/client.ts';
import { commitVersion as commit, type LineageInput } from '../versions/commit.ts';
import { lineageGraph } from '../versions/lineage.ts';
import { servingWarnings } from '../versions/serving.ts';
import { authorize, type Context, paramsOf, principalOf, repositoryFor } from './context.ts';
import { jobById } from './jobs.ts';
import { versionInclude, versionView } from './views.ts';

type CommitBody = VersionCommit;

/** A version by number or tag, as the caller may read it. */
export async function resolveVersion(ctx: Context, repo: Repository, ref: string) {
  const where = /^\d+$/.test(ref) ? { repositoryId_number: { repositoryId: repo.id, number: Number(ref) } } : undefined;
  const version = where
    ? await ctx.prisma.version.findUnique({ where, include: versionInclude })
    : (
        await ctx.prisma.tag.findUnique({
          where: { repositoryId_name: { repositoryId: repo.id, name: ref } },
          include: { version: { include: versionInclude } },
        })
      )?.version;
  if (!version)
    throw new LowrankError('not_found', `${repo.namespace}/${repo.name} has no version ${/^\d+$/.test(ref) ? ref : `tagged "${ref}"`}`);
  return version;
}

/** Lineage parents named namespace/name@number become version ids the caller may read. */
async function resolveLineage(ctx: Context, res: Response, lineage: NonNullable<CommitBody['lineage']>): Promise<LineageInput[]> {
  const errors: FieldError[] = [];
  const out: LineageInput[] = [];
  for (const [i, l] of lineage.entries()) {
    const base = {
      relation: l.relation,
      ...(l.weight === undefined ? {} : { weight: l.weight }),
      ...(l.parameters ? { parameters: l.parameters } : {}),
    };
    if (l.parent === undefined) {
      out.push({ ...base, ...(l.parentRef === undefined ? {} : { parentRef: l.parentRef }) });
      continue;
    }
    const m = /^([a-z0-9-]+)\/([a-z0-9-]+)@(\d+)$/.exec(l.parent);
    const parent = m
      ? await ctx.prisma.version.findFirst({
          where: { number: Number(m[3]), repository: { namespace: m[1] as string, name: m[2] as string } },
          include: { repository: true },
        })
      : null;
    let readable = !!parent;
    if (parent) {
      try {
        authorize(principalOf(res), 'read', { teamId: parent.repository.teamId, visibility: parent.repository.visibility });
      } catch {
        readable = false;
      }
    }
    if (!parent || !readable) errors.push({ path: `body.lineage[${i}].parent`, message: `version ${l.parent} not found` });
    else out.push({ ...base, parentVersionId: parent.id });
  }
  if (errors.length > 0) throw new LowrankError('invalid_request', 'lineage names versions that do not exist', { errors });
  return out;
}

export function listVersions(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await repositoryFor(ctx, res, 'read');
    const rows = await ctx.prisma.version.findMany({
      where: { repositoryId: repo.id },
      include: versionInclude,
      orderBy: { number: 'desc' },
      take: 1000,
    });
    res.json({ items: rows.map(versionView) });
  };
}

export function getVersion(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await repositoryFor(ctx, res, 'read');
    res.json(versionView(await resolveVersion(ctx, repo, paramsOf(res).ref as string)));
  };
}

/** The job a version names as its maker must exist and be the caller's to write. */
async function writableJob(ctx: Context, res: Response, id: string): Promise<string> {
  try {
    return (await jobById(ctx, res, id, 'write')).id;
  } catch (err) {
    if (err instanceof LowrankError && (err.code === 'not_found' || err.code === 'forbidden'))
      throw new LowrankError('invalid_request', `jobId ${id}: ${err.message}`, { errors: [{ path: 'body.jobId', message: err.message }] });
    throw err;
  }
}

export function commitVersion(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await repositoryFor(ctx, res, 'write');
    const principal = principalOf(res);
    const body = req.body as CommitBody;
    const lineage = await resolveLineage(ctx, res, body.lineage ?? []);
    const made = await commit(ctx.prisma, {
      repositoryId: repo.id,
      files: body.files,
      config: body.config,
      lineage,
      ...(body.number === undefined ? {} : { number: body.number }),
      ...(body.method === undefined ? {} : { method: body.method }),
      ...(body.methodMetadata ? { methodMetadata: body.methodMetadata } : {}),
      ...(body.metrics ? { metrics: body.metrics } : {}),
      ...(body.rank === undefined ? {} : { rank: body.rank }),
      ...(body.tags ? { tags: body.tags } : {}),
      ...(body.jobId ? { jobId: await writableJob(ctx, res, body.jobId) } : {}),
      ...(principal ? { createdById: principal.userId } : {}),
    });
    await ctx.prisma.auditEvent.create({
      data: {
        actorId: principal?.userId ?? null,
        tokenId: principal?.tokenId ?? null,
        action: 'version.commit',
        target: `${repo.namespace}/${repo.name}@${made.number}`,
        details: { files: body.files.length },
      },
    });
    // Diagnostics follow the commit; the version is already whole without them.
    await ctx.postprocess
      ?.diagnostics(made.id)
      .catch((err: unknown) => ctx.log.warn({ err, version: made.id }, 'could not queue diagnostics'));
    const version = await ctx.prisma.version.findUniqueOrThrow({ where: { id: made.id }, include: versionInclude });
    const warnings = servingWarnings(`${repo.namespace}/${repo.name}`, made.number, body.config, body.rank);
    res.status(201).json({ ...versionView(version), ...(warnings.length > 0 ? { warnings } : {}) });
  };
}

export function getLineage(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await repositoryFor(ctx, res, 'read');
    const version = await resolveVersion(ctx, repo, paramsOf(res).ref as string);
    const principal = principalOf(res);
    const direction = (req.query.direction as 'ancestors' | 'descendants' | 'both' | undefined) ?? 'both';
    const depth = req.query.depth === undefined ? 8 : Number(req.query.depth);
    const graph = await lineageGraph(ctx.prisma, version.id, {
      direction,
      depth,
      canRead: (r) => decide(principal, 'read', { teamId: r.teamId, visibility: r.visibility }).allowed,
    });
    res.json({ root: version.id, ...graph });
  };
}
