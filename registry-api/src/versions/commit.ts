/**
 * Commits a version: one transaction that takes a reference on every file's blob,
 * allocates the version number, and writes the version, its files, lineage and tags.
 * A version is visible whole or not at all; two pushes of the same number: one wins,
 * the other gets a conflict and changes nothing.
 */
import { type FieldError, LowrankError } from '@lowrank/crds/errors';
import { Prisma, type PrismaClient, type Relation } from '../generated/prisma/client.ts';
import { checkFiles, type VersionFileInput } from './files.ts';

export interface LineageInput {
  relation: Relation;
  /** A version in this registry: "namespace/name@<number>"... resolved by the caller to an id. */
  parentVersionId?: string;
  /** A parent outside the registry, e.g. "hf:meta-llama/Llama-3.2-1B@<revision>". */
  parentRef?: string;
  weight?: number;
  parameters?: Record<string, unknown>;
}

export interface CommitInput {
  repositoryId: string;
  /** The number the client expects to create; omitted: the next one. */
  number?: number;
  files: VersionFileInput[];
  config: Record<string, unknown>;
  method?: string;
  methodMetadata?: Record<string, unknown>;
  metrics?: Record<string, unknown>;
  rank?: number;
  lineage?: LineageInput[];
  tags?: string[];
  jobId?: string;
  createdById?: string;
}

const TAG_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function checkInput(input: CommitInput): void {
  checkFiles(input.files);
  const errors: FieldError[] = [];
  (input.tags ?? []).forEach((t, i) => {
    if (!TAG_RE.test(t) || /^\d+$/.test(t))
      errors.push({ path: `tags[${i}]`, message: `"${t}" is not a tag (letters, digits, . _ -; not all digits: numbers name versions)` });
  });
  (input.lineage ?? []).forEach((l, i) => {
    if ((l.parentVersionId === undefined) === (l.parentRef === undefined))
      errors.push({ path: `lineage[${i}]`, message: 'give exactly one of parentVersionId and parentRef' });
  });
  if (input.number !== undefined && (!Number.isInteger(input.number) || input.number < 1))
    errors.push({ path: 'number', message: 'must be a positive integer' });
  if (errors.length > 0) throw new LowrankError('invalid_request', 'the version is invalid', { errors });
}

const isUniqueViolation = (err: unknown) => err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002';

export async function commitVersion(db: PrismaClient, input: CommitInput): Promise<{ id: string; number: number }> {
  checkInput(input);
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.$transaction(async (tx) => {
        const digests = input.files.map((f) => f.digest);
        const blobs = await tx.blob.findMany({ where: { digest: { in: digests } } });
        const byDigest = new Map(blobs.map((b) => [b.digest, b]));
        const missing: FieldError[] = [];
        input.files.forEach((f, i) => {
          const b = byDigest.get(f.digest);
          if (!b)
            missing.push({
              path: `files[${i}]`,
              message: `blob ${f.digest} for "${f.path}" was not uploaded; upload it, then commit again`,
            });
          else if (b.size !== BigInt(f.size))
            missing.push({ path: `files[${i}].size`, message: `"${f.path}" is ${b.size} bytes in storage, not ${f.size}` });
        });
        if (missing.length > 0)
          throw new LowrankError('invalid_request', 'the version refers to blobs that are not stored', { errors: missing });
        for (const f of input.files) {
          await tx.blob.update({ where: { digest: f.digest }, data: { refCount: { increment: 1 }, unreferencedAt: null } });
        }
        const last = await tx.version.aggregate({ where: { repositoryId: input.repositoryId }, _max: { number: true } });
        const number = input.number ?? (last._max.number ?? 0) + 1;
        const version = await tx.version.create({
          data: {
            repositoryId: input.repositoryId,
            number,
            config: input.config as Prisma.InputJsonValue,
            method: input.method ?? null,
            methodMetadata: (input.methodMetadata ?? {}) as Prisma.InputJsonValue,
            metrics: (input.metrics ?? {}) as Prisma.InputJsonValue,
            rank: input.rank ?? null,
            jobId: input.jobId ?? null,
            createdById: input.createdById ?? null,
            files: { create: input.files.map((f) => ({ path: f.path, blobDigest: f.digest, size: BigInt(f.size) })) },
            parents: {
              create: (input.lineage ?? []).map((l) => ({
                relation: l.relation,
                parentId: l.parentVersionId ?? null,
                parentRef: l.parentRef ?? null,
                weight: l.weight ?? null,
                parameters: (l.parameters ?? {}) as Prisma.InputJsonValue,
              })),
            },
          },
        });
        for (const name of new Set(['latest', ...(input.tags ?? [])])) {
          await tx.tag.upsert({
            where: { repositoryId_name: { repositoryId: input.repositoryId, name } },
            create: { repositoryId: input.repositoryId, name, versionId: version.id, updatedById: input.createdById ?? null },
            update: { versionId: version.id, updatedById: input.createdById ?? null },
          });
        }
        return { id: version.id, number };
      });
    } catch (err) {
      if (!isUniqueViolation(err)) throw err;
      if (input.number !== undefined) {
        throw new LowrankError(
          'conflict',
          `version ${input.number} already exists in this repository; versions are immutable, push as the next number`,
        );
      }
      if (attempt >= 4) throw new LowrankError('conflict', 'too many concurrent pushes to this repository; retry');
    }
  }
}
