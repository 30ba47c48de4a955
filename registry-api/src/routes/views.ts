/** JSON views of database rows, in the shapes of the OpenAPI document's schemas. */
import type { Prisma } from '../generated/prisma/client.ts';

export const versionInclude = {
  repository: true,
  files: { orderBy: { path: 'asc' } },
  parents: { include: { parent: { include: { repository: true } } } },
  tags: true,
} as const satisfies Prisma.VersionInclude;

type VersionRow = Prisma.VersionGetPayload<{ include: typeof versionInclude }>;

export function versionView(v: VersionRow) {
  return {
    repository: `${v.repository.namespace}/${v.repository.name}`,
    number: v.number,
    job: v.jobId,
    createdAt: v.createdAt.toISOString(),
    config: v.config,
    method: v.method,
    methodMetadata: v.methodMetadata,
    metrics: v.metrics,
    rank: v.rank,
    yanked: v.yankedAt ? { at: v.yankedAt.toISOString(), reason: v.yankReason ?? '' } : null,
    files: v.files.map((f) => ({ path: f.path, digest: f.blobDigest, size: Number(f.size) })),
    lineage: v.parents.map((e) => ({
      relation: e.relation,
      parent: e.parent ? `${e.parent.repository.namespace}/${e.parent.repository.name}@${e.parent.number}` : null,
      parentRef: e.parentRef,
      weight: e.weight,
      parameters: e.parameters,
    })),
    tags: v.tags.map((t) => t.name).sort(),
  };
}

type RepositoryRow = Prisma.RepositoryGetPayload<{ include: { tags: { include: { version: true } } } }>;

export function repositoryView(r: RepositoryRow) {
  return {
    namespace: r.namespace,
    name: r.name,
    baseModel: r.baseModel,
    taskTags: r.taskTags,
    visibility: r.visibility,
    description: r.description,
    createdAt: r.createdAt.toISOString(),
    tags: Object.fromEntries(r.tags.map((t) => [t.name, t.version.number])),
  };
}
