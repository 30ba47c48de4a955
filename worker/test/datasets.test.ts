/**
 * Datasets beyond JSONL: the same records written by pyarrow as Parquet (snappy, gzip,
 * zstd), as `datasets.save_to_disk` lays out Arrow (a Dataset and a DatasetDict), in the
 * Hub's Parquet layout and in the Arrow IPC file format all give the examples their JSONL
 * gives (chat messages as lists of structs included); splits are chosen by name; bad
 * files and layouts are refused naming the file and what to do. Remote datasets: s3://
 * (a real MinIO bucket: one object and a prefix) and https:// are downloaded into the
 * work dir and read; missing objects and refused schemes are clear errors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { LowrankError } from '@lowrank/crds/errors';
import { serviceEnv } from '@lowrank/e2e/env';
import { type DatasetOptions, prepareDataset } from '../src/data/dataset.ts';
import { fetchDataset } from '../src/data/remote.ts';
import { nextDigitTask } from '../src/data/synthetic.ts';
import { TextTokenizer } from '../src/tokenizer/tokenizer.ts';
import { pythonDir, referencePython } from './support/python-ref.ts';
import { writeTinyBase } from './support/tiny-base.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-datasets-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const out = join(tmp, 'written');
const quiet = { info: () => {} };
let tok: TextTokenizer;

// Mixed layouts in one file are not a thing: one set per format kind.
const pc = nextDigitTask(23, 4).map((r) => ({ prompt: r.prompt, completion: r.completion }));
const chat = nextDigitTask(5, 6).map((r) => ({
  messages: [
    { role: 'user', content: r.prompt },
    { role: 'assistant', content: r.completion },
  ],
}));
const opts: DatasetOptions = { format: 'auto', evalFraction: 0, maxSeqLength: 32, seed: 1 };

before(() => {
  writeTinyBase(join(tmp, 'base'));
  tok = TextTokenizer.load(join(tmp, 'base'));
  writeFileSync(join(tmp, 'records.json'), JSON.stringify({ train: pc, test: pc.slice(0, 4) }));
  writeFileSync(join(tmp, 'train.jsonl'), `${pc.map((r) => JSON.stringify(r)).join('\n')}\n`);
  writeFileSync(join(tmp, 'chat.json'), JSON.stringify({ train: chat }));
  writeFileSync(join(tmp, 'chat.jsonl'), `${chat.map((r) => JSON.stringify(r)).join('\n')}\n`);
  for (const [records, dir] of [
    ['records.json', out],
    ['chat.json', join(tmp, 'chat-written')],
  ]) {
    const r = spawnSync(referencePython(), [join(pythonDir, 'write_datasets.py'), join(tmp, records as string), dir as string], {
      encoding: 'utf8',
      env: { ...process.env, PYTHONPATH: process.env.LOWRANK_PYARROW_PATH ?? '' },
    });
    assert.equal(r.status, 0, `write_datasets.py failed (pyarrow comes from lowrank_ensure_pyenv):\n${r.stderr}`);
  }
});

/** The examples in a canonical order (the shuffle is by position, so compare sorted). */
const examples = async (path: string, o: Partial<DatasetOptions> = {}) => {
  const d = await prepareDataset(path, tok, { ...opts, ...o });
  return { format: d.format, records: d.records, ex: d.train.map((e) => JSON.stringify([e.ids, e.labels])).sort() };
};

describe('datasets: Parquet and Arrow as Python writes them', () => {
  it('give the examples of the same records in JSONL, for every codec and layout', async () => {
    const want = await examples(join(tmp, 'train.jsonl'));
    assert.equal(want.format, 'prompt-completion');
    assert.equal(want.records, 23);
    for (const path of [
      join(out, 'train.snappy.parquet'),
      join(out, 'train.gzip.parquet'),
      join(out, 'train.zstd.parquet'),
      join(out, 'saved'),
      join(out, 'dict'),
      join(out, 'hub'),
      join(out, 'train.arrow-file.arrow'),
    ])
      assert.deepEqual(await examples(path), want, path);
    // Chat messages are a list of structs in Arrow and Parquet.
    const chatWant = await examples(join(tmp, 'chat.jsonl'));
    assert.equal(chatWant.format, 'chat');
    assert.deepEqual(await examples(join(tmp, 'chat-written', 'train.snappy.parquet')), chatWant);
    assert.deepEqual(await examples(join(tmp, 'chat-written', 'saved')), chatWant);
  });

  it('choose the split by name, and say which splits exist when it is missing', async () => {
    assert.equal((await examples(join(out, 'dict'), { split: 'test' })).records, 4);
    assert.equal((await examples(join(out, 'hub'), { split: 'test' })).records, 4);
    await assert.rejects(
      examples(join(out, 'dict'), { split: 'validation' }),
      /without split "validation"; it has test, train: set spec.dataset.split/,
    );
    await assert.rejects(examples(join(out, 'hub'), { split: 'validation' }), /none of "validation": set spec.dataset.split/);
  });

  it('refuse broken files and records naming the file (and row) and what to fix', async () => {
    const broken = join(tmp, 'broken.parquet');
    writeFileSync(broken, readFileSync(join(out, 'train.snappy.parquet')).subarray(100));
    await assert.rejects(
      examples(broken),
      (e: Error) => e instanceof LowrankError && /broken\.parquet is not a readable Parquet file/.test(e.message),
    );
    const arrow = join(tmp, 'broken.arrow');
    writeFileSync(arrow, Buffer.from('not arrow at all'));
    await assert.rejects(examples(arrow), /broken\.arrow is not a readable Arrow IPC file or stream/);
    const dir = join(tmp, 'empty-dir');
    mkdirSync(dir);
    await assert.rejects(examples(dir), /has no \.jsonl, \.parquet or \.arrow file/);
    await assert.rejects(examples(join(tmp, 'records.json')), /give a \.jsonl, \.parquet or \.arrow file/);
    // A record without the field: the row is named.
    writeFileSync(join(tmp, 'rows.json'), JSON.stringify({ train: [...pc.slice(0, 3), { prompt: 'x' }] }));
    const r = spawnSync(referencePython(), [join(pythonDir, 'write_datasets.py'), join(tmp, 'rows.json'), join(tmp, 'rows')], {
      encoding: 'utf8',
      env: { ...process.env, PYTHONPATH: process.env.LOWRANK_PYARROW_PATH ?? '' },
    });
    assert.equal(r.status, 0, r.stderr);
    await assert.rejects(examples(join(tmp, 'rows', 'train.snappy.parquet')), /train\.snappy\.parquet#row 3: field "completion"/);
  });
});

describe('datasets by uri', () => {
  const bucket = `datasets-${Date.now().toString(36)}`;
  let s3: S3Client;
  const saved: Record<string, string | undefined> = {};
  before(async () => {
    s3 = new S3Client({
      endpoint: serviceEnv('S3_ENDPOINT'),
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: serviceEnv('S3_ACCESS_KEY_ID'), secretAccessKey: serviceEnv('S3_SECRET_ACCESS_KEY') },
    });
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const put = (key: string, file: string) => s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: readFileSync(file) }));
    await put('one/train.zstd.parquet', join(out, 'train.zstd.parquet'));
    await put('dict/dataset_dict.json', join(out, 'dict', 'dataset_dict.json'));
    for (const split of ['train', 'test'])
      for (const f of ['data-00000-of-00001.arrow', 'state.json', 'dataset_info.json'])
        await put(`dict/${split}/${f}`, join(out, 'dict', split, f));
    // The worker reads S3 settings from the standard AWS environment.
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_ENDPOINT_URL_S3', 'AWS_REGION']) saved[k] = process.env[k];
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: serviceEnv('S3_ACCESS_KEY_ID'),
      AWS_SECRET_ACCESS_KEY: serviceEnv('S3_SECRET_ACCESS_KEY'),
      AWS_ENDPOINT_URL_S3: serviceEnv('S3_ENDPOINT'),
      AWS_REGION: 'us-east-1',
    });
  });
  after(() => {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    s3?.destroy();
  });

  it('downloads an s3:// object and an s3:// prefix (a DatasetDict) into the work dir and reads them', async () => {
    const want = await examples(join(tmp, 'train.jsonl'));
    const work = mkdtempSync(join(tmp, 'work-'));
    const one = await fetchDataset(`s3://${bucket}/one/train.zstd.parquet`, work, quiet);
    assert.ok(one.startsWith(work));
    assert.deepEqual(await examples(one), want);
    const dict = await fetchDataset(`s3://${bucket}/dict/`, work, quiet);
    assert.deepEqual(await examples(dict), want);
    assert.equal((await examples(dict, { split: 'test' })).records, 4);
    // A retry finds the complete download and reuses it.
    assert.equal(await fetchDataset(`s3://${bucket}/one/train.zstd.parquet`, work, quiet), one);
    await assert.rejects(fetchDataset(`s3://${bucket}/one/missing.parquet`, work, quiet), /does not exist/);
    await assert.rejects(fetchDataset(`s3://${bucket}/nothing-here/`, work, quiet), /no \.jsonl, \.parquet or \.arrow object under/);
  });

  it('downloads https:// files; refuses other schemes and names what to do', async () => {
    const server = createServer((req, res) => {
      if (req.url === '/d/train.jsonl') res.end(readFileSync(join(tmp, 'train.jsonl')));
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const work = mkdtempSync(join(tmp, 'work-'));
      const path = await fetchDataset(`${base}/d/train.jsonl`, work, quiet);
      assert.deepEqual(await examples(path), await examples(join(tmp, 'train.jsonl')));
      await assert.rejects(
        fetchDataset(`${base}/d/gone.jsonl`, work, quiet),
        (e: Error) => e instanceof LowrankError && e.code === 'invalid_spec' && /HTTP 404/.test(e.message),
      );
    } finally {
      server.close();
    }
    const work = mkdtempSync(join(tmp, 'work-'));
    await assert.rejects(
      fetchDataset('http://127.0.0.1:1/x.jsonl', work, quiet),
      (e: Error) => e instanceof LowrankError && e.code === 'unavailable',
    );
    await assert.rejects(
      fetchDataset('hf://datasets/org/name', work, quiet),
      /hf:\/\/ datasets are not fetched by this worker; use s3:\/\/, https:\/\/ or file:\/\//,
    );
    await assert.rejects(fetchDataset('gs://bucket/x.jsonl', work, quiet), /give path/);
  });
});
