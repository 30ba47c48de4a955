/**
 * Prompt-completion records as text (the transfer pipeline works on text, so it crosses
 * tokenizers): read back from a prepared dataset's examples (each names its file:line)
 * or from a JSONL file or directory of them.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { Example } from '../data/dataset.ts';
import type { SeedRecord } from './seed-crypto.ts';

function asRecord(rec: unknown, where: string): SeedRecord {
  const r = rec as Record<string, unknown>;
  if (typeof r?.prompt !== 'string' || typeof r?.completion !== 'string')
    throw new LowrankError('invalid_file', `${where}: a {prompt, completion} record is expected`);
  return { prompt: r.prompt, completion: r.completion };
}

/** The raw records behind examples of a prompt-completion dataset, in the examples' order. */
export function recordsOf(examples: Example[]): SeedRecord[] {
  const files = new Map<string, string[]>();
  return examples.map((e) => {
    const cut = e.where.lastIndexOf(':');
    const [file, line] = [e.where.slice(0, cut), Number(e.where.slice(cut + 1))];
    let lines = files.get(file);
    if (!lines) {
      lines = readFileSync(file, 'utf8').split('\n');
      files.set(file, lines);
    }
    return asRecord(JSON.parse(lines[line - 1] as string), e.where);
  });
}

export function readRecords(path: string, where: string): SeedRecord[] {
  let list: string[];
  try {
    list = statSync(path).isDirectory()
      ? readdirSync(path)
          .filter((f) => f.endsWith('.jsonl'))
          .sort()
          .map((f) => join(path, f))
      : [path];
  } catch {
    throw new LowrankError('invalid_file', `${where}: ${path} does not exist`);
  }
  const out: SeedRecord[] = [];
  for (const file of list)
    for (const [i, line] of readFileSync(file, 'utf8').split('\n').entries()) {
      if (line.trim() === '') continue;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch (err) {
        throw new LowrankError('invalid_file', `${where}: ${file}:${i + 1} is not valid JSON (${(err as Error).message})`);
      }
      out.push(asRecord(rec, `${where}: ${file}:${i + 1}`));
    }
  if (out.length === 0) throw new LowrankError('invalid_file', `${where}: ${path} has no records`);
  return out;
}
