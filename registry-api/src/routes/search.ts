/**
 * searchRepositories: full-text search (PostgreSQL tsvector, websearch syntax) plus
 * filters by base model, team, task tag, and by what a repository's versions are
 * (method, rank, lineage relation), over what the caller may read only.
 */
import type { RequestHandler } from 'express';
import type { Principal } from '../auth/principal.ts';
import type { Prisma } from '../generated/prisma/client.ts';
import { type Context, principalOf } from './context.ts';
import { repositoryView } from './views.ts';

/** The read rule of auth/policy.ts, as a database filter. */
export function readableWhere(p: Principal | null): Prisma.RepositoryWhereInput {
  if (!p) return { visibility: 'public' };
  const siteAdmin = p.isAdmin && p.scope === 'admin' && p.tokenTeamId === null;
  if (siteAdmin) return {};
  const teams = p.tokenTeamId ? [...p.teams.keys()].filter((t) => t === p.tokenTeamId) : [...p.teams.keys()];
  return { OR: [{ visibility: { in: ['public', 'internal'] } }, { teamId: { in: teams } }] };
}

export function searchRepositories(ctx: Context): RequestHandler {
  return async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    const limit = q.limit ? Number(q.limit) : 20;
    const offset = q.offset ? Number(q.offset) : 0;
    const and: Prisma.RepositoryWhereInput[] = [readableWhere(principalOf(res))];
    let scores: Map<string, number> | undefined;
    if (q.q) {
      const rows = await ctx.prisma.$queryRaw<{ id: string; score: number }[]>`
        SELECT id, ts_rank("search", websearch_to_tsquery('simple', ${q.q}))::float8 AS score
        FROM "Repository" WHERE "search" @@ websearch_to_tsquery('simple', ${q.q})`;
      scores = new Map(rows.map((r) => [r.id, r.score]));
      and.push({ id: { in: [...scores.keys()] } });
    }
    if (q.baseModel) and.push({ baseModel: q.baseModel });
    if (q.team) and.push({ namespace: q.team });
    if (q.tag) and.push({ taskTags: { has: q.tag } });
    const version: Prisma.VersionWhereInput = {};
    if (q.method) version.method = q.method;
    if (q.rank) version.rank = Number(q.rank);
    if (q.relation) version.parents = { some: { relation: q.relation as Prisma.EnumRelationFilter['equals'] } };
    if (Object.keys(version).length > 0) and.push({ versions: { some: { ...version, yankedAt: null } } });
    const where: Prisma.RepositoryWhereInput = { AND: and };
    const include = { tags: { include: { version: true } }, versions: { orderBy: { number: 'desc' }, take: 1 } } as const;
    const [total, found] = await Promise.all([
      ctx.prisma.repository.count({ where }),
      ctx.prisma.repository.findMany({
        where,
        include,
        // Relevance needs the scores from the text query: sort those in memory (they are already filtered).
        ...(scores ? {} : { orderBy: [{ updatedAt: 'desc' }, { namespace: 'asc' }, { name: 'asc' }], skip: offset, take: limit }),
      }),
    ]);
    const page = scores
      ? found
          .sort((a, b) => (scores.get(b.id) ?? 0) - (scores.get(a.id) ?? 0) || a.name.localeCompare(b.name))
          .slice(offset, offset + limit)
      : found;
    res.json({
      total,
      items: page.map((r) => ({
        ...repositoryView(r),
        latest: r.versions[0] ? { number: r.versions[0].number, method: r.versions[0].method, rank: r.versions[0].rank } : null,
        ...(scores ? { score: scores.get(r.id) ?? 0 } : {}),
      })),
    });
  };
}
