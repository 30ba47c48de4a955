/**
 * Diagnostics of an adapter version, computed by the native core (METHODS §6): per module
 * the singular values of ΔW = s·B·A from its factors, cumulative energy, the rank at 50 /
 * 90 / 95 / 99 % energy, effective and stable rank, norms and the A/B balance; and a
 * summary the catalog shows at a glance. Versions without a PEFT LoRA
 * (adapter_config.json + adapter_model.safetensors) get a diagnostics record that says so.
 */
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { spectra } from '../../../worker/src/native/linalg.ts';
import { readPeftAdapter } from '../../../worker/src/peft/adapter-dir.ts';
import type { BlobStore } from '../blobs/store.ts';
import type { Prisma, PrismaClient } from '../generated/prisma/client.ts';

const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'];
const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1e6) / 1e6 : null);

export async function computeDiagnostics(db: PrismaClient, store: BlobStore, versionId: string): Promise<Record<string, unknown>> {
  const version = await db.version.findUniqueOrThrow({ where: { id: versionId }, include: { files: true } });
  const files = new Map(version.files.map((f) => [f.path, f.blobDigest]));
  let data: Record<string, unknown>;
  if (!ADAPTER_FILES.every((f) => files.has(f))) {
    data = {
      schema: 'lowrank.diagnostics/v1',
      kind: 'none',
      reason: 'not a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)',
    };
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'lowrank-diagnostics-'));
    try {
      for (const f of ADAPTER_FILES) await pipeline(await store.get(files.get(f) as string), createWriteStream(join(dir, f)));
      data = describe(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  await db.versionDiagnostics.upsert({
    where: { versionId },
    create: { versionId, data: data as Prisma.InputJsonValue },
    update: { data: data as Prisma.InputJsonValue, computedAt: new Date() },
  });
  return data;
}

function describe(dir: string): Record<string, unknown> {
  const adapter = readPeftAdapter(dir);
  const modules: Record<string, unknown> = {};
  const eranks: number[] = [];
  let params = 0;
  for (const [name, m] of Object.entries(adapter.modules).sort(([a], [b]) => a.localeCompare(b))) {
    const s = spectra(m);
    params += m.r * (m.in + m.out);
    if (Number.isFinite(s.erank)) eranks.push(s.erank);
    modules[name] = {
      r: m.r,
      in: m.in,
      out: m.out,
      scale: m.scale,
      sigma: Array.from(s.sigma, round),
      energy: Array.from(s.energy, round),
      kAt: s.kAt,
      fro: round(s.fro),
      spec: round(s.spec),
      nuc: round(s.nuc),
      erank: round(s.erank),
      srank: round(s.srank),
      normA: round(s.normA),
      normB: round(s.normB),
      balance: round(s.balance),
      maxabs: round(s.maxabs),
      nonfinite: s.nonfinite,
    };
  }
  const count = Object.keys(modules).length;
  return {
    schema: 'lowrank.diagnostics/v1',
    kind: 'lora',
    summary: {
      modules: count,
      params,
      maxRank: Math.max(...Object.values(adapter.modules).map((m) => m.r)),
      meanEffectiveRank: eranks.length ? round(eranks.reduce((a, b) => a + b, 0) / eranks.length) : null,
      maxEffectiveRank: eranks.length ? round(Math.max(...eranks)) : null,
      nonfiniteModules: Object.values(modules).filter((m) => (m as { nonfinite: number }).nonfinite > 0).length,
    },
    modules,
  };
}
