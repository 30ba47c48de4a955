/**
 * The records of a dataset path, whatever it is stored as: JSONL, Parquet (read by
 * hyparquet; snappy built in, gzip/brotli/zstd from node:zlib) or Arrow IPC (the stream
 * or file format, as Hugging Face `datasets` writes with save_to_disk; read by
 * apache-arrow). A directory is read as Hugging Face lays datasets out: a DatasetDict
 * (dataset_dict.json, one subdirectory per split), a saved Dataset (state.json naming
 * its .arrow files), or data files, of the split when their names say it
 * (`train-00000-of-00002.parquet`, `data/train.jsonl`). Every record comes with where it
 * is (`file:line` or `file#row`); the bytes of the files read feed the dataset digest.
 */
import type { Hash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { brotliDecompressSync, gunzipSync, zstdDecompressSync } from 'node:zlib';
import { LowrankError } from '@lowrank/crds/errors';
import { tableFromIPC } from 'apache-arrow';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';

export interface SourceRecord {
  rec: unknown;
  where: string;
}

const DATA_FILE = /\.(jsonl|parquet|arrow)$/i;

function bad(what: string): never {
  throw new LowrankError('invalid_file', `spec.dataset.path: ${what}`);
}

const dataFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => DATA_FILE.test(f) && statSync(join(dir, f)).isFile())
    .sort()
    .map((f) => join(dir, f));

/** The data files of `path` for `split`, in reading order. */
export function datasetFiles(path: string, split: string): string[] {
  if (!existsSync(path)) bad(`${path} does not exist`);
  if (!statSync(path).isDirectory()) {
    if (!DATA_FILE.test(path)) bad(`${path}: give a .jsonl, .parquet or .arrow file, or a directory of them`);
    return [path];
  }
  if (existsSync(join(path, 'dataset_dict.json'))) {
    const splits = readdirSync(path).filter((d) => statSync(join(path, d)).isDirectory());
    if (!splits.includes(split))
      bad(`${path} is a DatasetDict without split "${split}"; it has ${splits.join(', ') || 'none'}: set spec.dataset.split`);
    return datasetFiles(join(path, split), split);
  }
  if (existsSync(join(path, 'state.json'))) {
    let state: { _data_files?: { filename?: string }[] };
    try {
      state = JSON.parse(readFileSync(join(path, 'state.json'), 'utf8'));
    } catch (err) {
      bad(`${join(path, 'state.json')} is not valid JSON (${(err as Error).message})`);
    }
    const named = (state._data_files ?? []).map((f) => f.filename);
    if (named.length === 0 || named.some((f) => typeof f !== 'string' || f.includes('/') || f.includes('\\')))
      bad(`${join(path, 'state.json')}: _data_files must list the .arrow files of the dataset by name`);
    return named.map((f) => join(path, f as string));
  }
  const here = dataFiles(path);
  const inData = existsSync(join(path, 'data')) && statSync(join(path, 'data')).isDirectory() ? dataFiles(join(path, 'data')) : [];
  const all = here.length > 0 ? here : inData;
  if (all.length === 0) bad(`${path} has no .jsonl, .parquet or .arrow file (nor a data/ directory with some)`);
  // Hub layout: files named by split; when some are, only this split's are read.
  const splitOf = (f: string) => /^([A-Za-z0-9]+)(?=[-_.])/.exec(basename(f))?.[1];
  const known = new Set(['train', 'validation', 'valid', 'test', 'eval', 'dev']);
  if (all.some((f) => known.has(splitOf(f) ?? ''))) {
    const mine = all.filter((f) => splitOf(f) === split);
    if (mine.length === 0)
      bad(`${path} has files of splits ${[...new Set(all.map(splitOf))].join(', ')} but none of "${split}": set spec.dataset.split`);
    return mine;
  }
  return all;
}

/** Arrow and Parquet values as JSON-like values (lists of structs become arrays of objects). */
function plain(v: unknown): unknown {
  if (v === null || v === undefined || typeof v !== 'object') return typeof v === 'bigint' ? Number(v) : v;
  if (Array.isArray(v)) return v.map(plain);
  const o = v as { toJSON?: () => unknown; toArray?: () => unknown };
  // apache-arrow Vectors (lists) and StructRows.
  if (typeof o.toArray === 'function' && typeof (v as { length?: unknown }).length === 'number')
    return Array.from(o.toArray() as Iterable<unknown>, plain);
  if (typeof o.toJSON === 'function' && !(v instanceof Date)) {
    const j = o.toJSON();
    if (j !== v) return plain(j);
  }
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
}

const COMPRESSORS = {
  GZIP: (input: Uint8Array) => new Uint8Array(gunzipSync(input)),
  BROTLI: (input: Uint8Array) => new Uint8Array(brotliDecompressSync(input)),
  ZSTD: (input: Uint8Array) => new Uint8Array(zstdDecompressSync(input)),
};

async function* parquetRecords(file: string, bytes: Buffer): AsyncGenerator<SourceRecord> {
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let rows: Record<string, unknown>[];
  try {
    parquetMetadata(buf); // a clear error for a file that is not Parquet, before decoding
    rows = await parquetReadObjects({ file: buf, compressors: COMPRESSORS, rowFormat: 'object' });
  } catch (err) {
    bad(`${file} is not a readable Parquet file (${(err as Error).message})`);
  }
  for (const [i, row] of rows.entries()) yield { rec: plain(row), where: `${file}#row ${i}` };
}

function* arrowRecords(file: string, bytes: Buffer): Generator<SourceRecord> {
  let table: ReturnType<typeof tableFromIPC>;
  try {
    table = tableFromIPC(bytes);
  } catch (err) {
    bad(`${file} is not a readable Arrow IPC file or stream (${(err as Error).message})`);
  }
  let i = 0;
  for (const row of table) yield { rec: plain(row), where: `${file}#row ${i++}` };
}

function* jsonlRecords(file: string, bytes: Buffer): Generator<SourceRecord> {
  for (const [i, line] of bytes.toString('utf8').split('\n').entries()) {
    if (line.trim() === '') continue;
    const where = `${file}:${i + 1}`;
    try {
      yield { rec: JSON.parse(line), where };
    } catch (err) {
      throw new LowrankError('invalid_file', `${where}: not valid JSON (${(err as Error).message})`);
    }
  }
}

/** Every record of the files, in order; each file's bytes go into `hash` as read. */
export async function* readRecords(files: string[], hash: Hash): AsyncGenerator<SourceRecord> {
  for (const file of files) {
    if (!existsSync(file)) bad(`${file} does not exist`);
    const bytes = readFileSync(file);
    hash.update(bytes);
    if (/\.parquet$/i.test(file)) yield* parquetRecords(file, bytes);
    else if (/\.arrow$/i.test(file)) yield* arrowRecords(file, bytes);
    else yield* jsonlRecords(file, bytes);
  }
}
