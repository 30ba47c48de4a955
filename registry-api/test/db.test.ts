/**
 * The database: migrations apply to an empty database and again to a populated one
 * (nothing to do), refuse edited history, serialise concurrent runs; and every model of
 * prisma/schema.prisma works through the generated client on the migrated database,
 * which proves the schema and the SQL agree.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LowrankError } from '@lowrank/crds/errors';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { listMigrations, MIGRATIONS_DIR, migrate } from '../src/db/migrate.ts';
import { PrismaClient } from '../src/generated/prisma/client.ts';
import { freshDatabase } from './support/database.ts';

describe('migrations', () => {
  it('apply to an empty database, then find nothing to do', async () => {
    const url = await freshDatabase();
    const all = listMigrations().map((m) => m.name);
    assert.ok(all.length > 0);
    assert.deepEqual(await migrate(url), { applied: all, alreadyApplied: [] });
    assert.deepEqual(await migrate(url), { applied: [], alreadyApplied: all });
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const { rows } = await c.query('SELECT migration_name, applied_steps_count FROM "_prisma_migrations" ORDER BY migration_name');
    await c.end();
    assert.deepEqual(
      rows,
      all.map((migration_name) => ({ migration_name, applied_steps_count: 1 })),
    );
  });

  it('serialise concurrent runs: each migration is applied exactly once', async () => {
    const url = await freshDatabase();
    const results = await Promise.all([migrate(url), migrate(url), migrate(url)]);
    assert.equal(
      results.reduce((n, r) => n + r.applied.length, 0),
      listMigrations().length,
    );
  });

  it('refuse to run when an applied migration was edited', async () => {
    const url = await freshDatabase();
    await migrate(url);
    const dir = mkdtempSync(join(tmpdir(), 'migrations-'));
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    const first = listMigrations(dir)[0]?.name as string;
    writeFileSync(join(dir, first, 'migration.sql'), '-- edited\nSELECT 1;\n');
    await assert.rejects(
      migrate(url, dir),
      (e: unknown) => e instanceof LowrankError && e.code === 'conflict' && /was edited after it was applied/.test(e.message),
    );
  });

  it('roll back a failing migration and record nothing for it; a populated database takes a new one', async () => {
    const url = await freshDatabase();
    await migrate(url);
    const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url }) });
    await prisma.organization.create({ data: { name: 'populated' } });
    const dir = mkdtempSync(join(tmpdir(), 'migrations-'));
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    cpSync(join(dir, listMigrations(dir)[0]?.name as string), join(dir, '29990101000000_broken'), { recursive: true });
    writeFileSync(
      join(dir, '29990101000000_broken', 'migration.sql'),
      'ALTER TABLE "Organization" ADD COLUMN "x" INT;\nSELECT * FROM no_such_table;\n',
    );
    await assert.rejects(migrate(url, dir), /migration 29990101000000_broken failed and was rolled back/);
    const cols = await prisma.$queryRawUnsafe<{ n: bigint }[]>(
      `SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'Organization' AND column_name = 'x'`,
    );
    assert.equal(Number(cols[0]?.n), 0);
    writeFileSync(
      join(dir, '29990101000000_broken', 'migration.sql'),
      'ALTER TABLE "Organization" ADD COLUMN "x" INT NOT NULL DEFAULT 7;\n',
    );
    assert.deepEqual((await migrate(url, dir)).applied, ['29990101000000_broken']);
    const rows = await prisma.$queryRawUnsafe<{ name: string; x: number }[]>(`SELECT name, x FROM "Organization"`);
    assert.deepEqual(rows, [{ name: 'populated', x: 7 }]);
    await prisma.$disconnect();
  });
});

describe('schema.prisma agrees with the migrated database', () => {
  let prisma: PrismaClient;
  before(async () => {
    const url = await freshDatabase();
    await migrate(url);
    prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url }) });
  });
  after(() => prisma.$disconnect());

  it('creates, reads, updates and deletes every model through the generated client', async () => {
    const org = await prisma.organization.create({ data: { name: 'acme', displayName: 'ACME' } });
    const team = await prisma.team.create({ data: { name: 'nlp-team', organizationId: org.id } });
    const user = await prisma.user.create({
      data: { handle: 'ada', email: 'ada@acme.test', memberships: { create: { teamId: team.id, role: 'maintainer' } } },
    });
    const token = await prisma.apiToken.create({
      data: {
        userId: user.id,
        teamId: team.id,
        name: 'ci',
        prefix: 'lrk_ab12',
        hash: 'f'.repeat(64),
        scope: 'write',
        expiresAt: new Date(Date.now() + 86_400_000),
      },
    });
    const repo = await prisma.repository.create({
      data: {
        namespace: 'nlp-team',
        name: 'support-bot',
        teamId: team.id,
        baseModel: 'meta-llama/Llama-3.2-1B',
        taskTags: ['chat', 'support'],
        visibility: 'internal',
      },
    });
    const blob = await prisma.blob.create({ data: { digest: `sha256:${'a'.repeat(64)}`, size: 5_000_000_000n, refCount: 1 } });
    const job = await prisma.job.create({ data: { kind: 'AdapterJob', name: 'train-1', spec: { mode: 'train' }, submittedById: user.id } });
    const v1 = await prisma.version.create({
      data: {
        repositoryId: repo.id,
        number: 1,
        config: { peft_type: 'LORA', r: 16 },
        method: 'lora',
        rank: 16,
        methodMetadata: { training: { lossCurve: [2.1, 1.7] } },
        jobId: job.id,
        files: { create: { path: 'adapter_model.safetensors', blobDigest: blob.digest, size: blob.size } },
      },
    });
    const v2 = await prisma.version.create({
      data: {
        repositoryId: repo.id,
        number: 2,
        config: { peft_type: 'LORA', r: 8 },
        rank: 8,
        parents: {
          create: [
            { parentId: v1.id, relation: 'compressed_from', parameters: { energy: 0.97 } },
            { parentRef: 'hf:meta-llama/Llama-3.2-1B', relation: 'trained_from' },
          ],
        },
      },
    });
    await prisma.tag.create({ data: { repositoryId: repo.id, name: 'prod', versionId: v2.id, updatedById: user.id } });
    await prisma.auditEvent.create({
      data: { actorId: user.id, tokenId: token.id, action: 'version.push', target: 'nlp-team/support-bot@2', details: { files: 1 } },
    });

    const got = await prisma.repository.findUniqueOrThrow({
      where: { namespace_name: { namespace: 'nlp-team', name: 'support-bot' } },
      include: {
        versions: { include: { files: true, parents: true, children: true, job: true }, orderBy: { number: 'asc' } },
        tags: true,
        team: { include: { organization: true } },
      },
    });
    assert.deepEqual(got.taskTags, ['chat', 'support']);
    assert.equal(got.team.organization.name, 'acme');
    assert.equal(got.versions[0]?.files[0]?.size, 5_000_000_000n);
    assert.equal(got.versions[0]?.job?.name, 'train-1');
    assert.equal(got.versions[0]?.children[0]?.childId, v2.id);
    assert.deepEqual(got.versions[1]?.parents.map((p) => p.relation).sort(), ['compressed_from', 'trained_from']);
    assert.equal(got.tags[0]?.versionId, v2.id);

    // Constraints the registry relies on are in the database, not only in code.
    await assert.rejects(prisma.version.create({ data: { repositoryId: repo.id, number: 2, config: {} } }), /Unique constraint/);
    await assert.rejects(prisma.blob.delete({ where: { digest: blob.digest } }), /Foreign key constraint|violates/);

    const ckpt = await prisma.jobCheckpoint.create({
      data: {
        jobId: job.id,
        step: 4,
        metadata: { fingerprint: 'f' },
        files: { create: { path: 'c.bin', blobDigest: blob.digest, size: 1n } },
      },
      include: { files: true },
    });
    assert.equal(ckpt.files[0]?.blobDigest, blob.digest);
    await assert.rejects(prisma.jobCheckpoint.create({ data: { jobId: job.id, step: 4 } }), /Unique constraint/);
    // Deleting the checkpoint deletes its file rows (the registry releases their counts first).
    await prisma.jobCheckpoint.delete({ where: { jobId_step: { jobId: job.id, step: 4 } } });
    assert.equal(await prisma.jobCheckpointFile.count(), 0);

    await prisma.version.update({ where: { id: v1.id }, data: { yankedAt: new Date(), yankReason: 'leaked eval data' } });
    await prisma.apiToken.update({ where: { id: token.id }, data: { revokedAt: new Date() } });
    await prisma.job.update({ where: { id: job.id }, data: { status: 'succeeded', progress: { step: 10, total: 10 } } });
    await prisma.membership.delete({ where: { userId_teamId: { userId: user.id, teamId: team.id } } });
    await prisma.tag.delete({ where: { repositoryId_name: { repositoryId: repo.id, name: 'prod' } } });
    await prisma.lineageEdge.deleteMany({ where: { childId: v2.id } });
    await prisma.versionFile.deleteMany({ where: { versionId: v1.id } });
    await prisma.blob.delete({ where: { digest: blob.digest } });
    assert.equal(await prisma.auditEvent.count(), 1);
  });
});
