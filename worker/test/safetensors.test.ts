/**
 * safetensors through the real native addon: round trips of every writable dtype with
 * exact bits, f16/bf16 conversions against independent references (V8's Float16Array,
 * hand-computed ties, PyTorch), a table of malformed files that must each fail with a
 * precise invalid_file message, and interop with Python's `safetensors` and PEFT.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LowrankError } from '@lowrank/crds/errors';
import { readSafetensors, type Tensor, toFloat32, type WritableTensor, writeSafetensors } from '../src/native/safetensors.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lowrank-safetensors-'));
let counter = 0;
const tmpPath = (name = 'f') => join(tmp, `${name}-${counter++}.safetensors`);

// V8's Float16Array (Node 24): an independent IEEE binary16 reference.
type F16Array = { [i: number]: number; length: number; buffer: ArrayBuffer };
const Float16 = (globalThis as unknown as { Float16Array: new (b: ArrayBuffer) => F16Array }).Float16Array;

const u32 = (f: Float32Array) => new Uint32Array(f.buffer, f.byteOffset, f.length);
const f32FromBits = (bits: number[]) => new Float32Array(new Uint32Array(bits).buffer);
const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
const at = (a: ArrayLike<number>, i: number): number => a[i] ?? Number.NaN;
/** A tensor's data (failing when the tensor is missing) and its values as numbers. */
function dataOf(t: Tensor | undefined): ArrayLike<number> {
  assert.ok(t, 'tensor missing');
  return t.data as ArrayLike<number>;
}
const values = (t: Tensor | undefined): number[] => Array.from(dataOf(t));

/** A file from a header string (or raw bytes) and a zero-filled data section. */
function build(header: string | Buffer, dataBytes = 0, lengthField?: bigint): Buffer {
  const h = typeof header === 'string' ? Buffer.from(header, 'utf8') : header;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthField ?? BigInt(h.length));
  return Buffer.concat([len, h, Buffer.alloc(dataBytes)]);
}
const entry = (name: string, dtype: string, shape: unknown, begin: unknown, end: unknown) =>
  `"${name}":{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":[${begin},${end}]}`;

function readRaw(file: Buffer) {
  const p = tmpPath('raw');
  writeFileSync(p, file);
  return { path: p, result: () => readSafetensors(p) };
}

function expectInvalid(file: Buffer, pattern: RegExp, label: string) {
  const { path, result } = readRaw(file);
  assert.throws(result, (err: unknown) => {
    assert.ok(err instanceof LowrankError, `${label}: not a LowrankError: ${err}`);
    assert.equal(err.code, 'invalid_file', label);
    assert.ok(err.message.startsWith(`${path}: `), `${label}: message does not name the file: ${err.message}`);
    assert.match(err.message, pattern, label);
    return true;
  });
}

describe('safetensors round trip', () => {
  it('writes and reads every writable dtype with exact bits and metadata', () => {
    const f32 = f32FromBits([0, 0x80000000, 0x3f800000, 1, 0x007fffff, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0x7fa00001]);
    const f16 = new Uint16Array([0, 0x8000, 1, 0x3ff, 0x400, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x3c00]);
    const bf16 = new Uint16Array([0, 0x8000, 1, 0x7f, 0x80, 0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0x3f80]);
    const i8 = new Int8Array([-128, -1, 0, 1, 127, 42]);
    const p = tmpPath();
    writeSafetensors(
      p,
      {
        'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': { dtype: 'F32', shape: [2, 5], data: f32 },
        h: { dtype: 'F16', shape: [11], data: f16 },
        b: { dtype: 'BF16', shape: [11, 1], data: bf16 },
        q: { dtype: 'I8', shape: [2, 3], data: i8 },
        'q.scale': { dtype: 'F32', shape: [], data: new Float32Array([0.25]) },
        empty: { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
      },
      { format: 'pt', note: 'ünïcode "quoted"\n' },
    );
    const r = readSafetensors(p);
    assert.deepEqual(r.metadata, { format: 'pt', note: 'ünïcode "quoted"\n' });
    const a = r.tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'];
    assert.ok(a?.data instanceof Float32Array);
    assert.deepEqual(a.shape, [2, 5]);
    assert.deepEqual([...u32(a.data)], [...u32(f32)]);
    const h = r.tensors.h;
    assert.ok(h?.dtype === 'F16' && h.data instanceof Uint16Array);
    assert.deepEqual([...h.data], [...f16]);
    const b = r.tensors.b;
    assert.ok(b?.dtype === 'BF16' && b.data instanceof Uint16Array);
    assert.deepEqual(b.shape, [11, 1]);
    assert.deepEqual([...b.data], [...bf16]);
    const q = r.tensors.q;
    assert.ok(q?.dtype === 'I8' && q.data instanceof Int8Array);
    assert.deepEqual([...q.data], [...i8]);
    assert.deepEqual(r.tensors['q.scale']?.shape, []);
    assert.deepEqual(values(r.tensors['q.scale']), [0.25]);
    assert.deepEqual(r.tensors.empty?.shape, [0, 3]);
    assert.equal(r.tensors.empty?.data.length, 0);
  });

  it('lays tensors out as the Rust crate does: dtype descending, then name; header padded to 8', () => {
    const p = tmpPath();
    writeSafetensors(p, {
      z8: { dtype: 'I8', shape: [3], data: new Int8Array(3) },
      a16: { dtype: 'F16', shape: [1], data: new Uint16Array(1) },
      b32: { dtype: 'F32', shape: [1], data: new Float32Array(1) },
      a32: { dtype: 'F32', shape: [2], data: new Float32Array(2) },
      bb: { dtype: 'BF16', shape: [1], data: new Uint16Array(1) },
    });
    const file = readFileSync(p);
    const n = Number(file.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const header = file.subarray(8, 8 + n).toString('utf8');
    assert.match(header, /^\{"a32".*\} *$/);
    assert.deepEqual(Object.keys(JSON.parse(header)), ['a32', 'b32', 'bb', 'a16', 'z8']);
    assert.equal(
      header.trimEnd(),
      '{"a32":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b32":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
        '"bb":{"dtype":"BF16","shape":[1],"data_offsets":[12,14]},"a16":{"dtype":"F16","shape":[1],"data_offsets":[14,16]},' +
        '"z8":{"dtype":"I8","shape":[3],"data_offsets":[16,19]}}',
    );
    assert.equal(file.length, 8 + n + 19);
  });

  it('views are zero-copy over the mapping where aligned, copies where not, and never write the file', () => {
    // Header of 13 bytes: data starts at offset 21, unaligned for F32.
    const header = `{${entry('w', 'F32', [2], 0, 8)}}`;
    const unaligned = Buffer.concat([build(header), Buffer.from(new Float32Array([1.5, -2]).buffer)]);
    assert.notEqual((8 + Buffer.byteLength(header)) % 4, 0);
    const { path, result } = readRaw(unaligned);
    const w = result().tensors.w;
    assert.deepEqual(values(w), [1.5, -2]);

    const p = tmpPath();
    writeSafetensors(p, { x: { dtype: 'F32', shape: [2], data: new Float32Array([3, 4]) } });
    const before = readFileSync(p);
    const x = readSafetensors(p).tensors.x?.data as Float32Array;
    assert.equal(x.buffer.byteLength, before.length, 'the view is over the whole mapped file');
    x[0] = 42;
    assert.deepEqual(readFileSync(p), before, 'writes to a view stay private');
    assert.deepEqual(readFileSync(path), unaligned);
  });

  it('unmaps the file once every view is garbage', () => {
    const p = tmpPath('gc');
    writeSafetensors(p, { x: { dtype: 'F32', shape: [1024], data: new Float32Array(1024) } });
    const addon = join(import.meta.dirname, '..', 'native', 'build', 'Release', 'lowrank_native.node');
    const script = `
      const n = require(${JSON.stringify(addon)});
      const fs = require('node:fs');
      const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.endsWith(${JSON.stringify(p)})).length;
      let keep = [];
      for (let i = 0; i < 50; i++) keep.push(n.readSafetensors(${JSON.stringify(p)}).tensors.x.data);
      const held = maps();
      keep = null;
      (async () => {
        for (let i = 0; i < 10 && maps() > 0; i++) { global.gc(); await new Promise((r) => setTimeout(r, 20)); }
        console.log(JSON.stringify({ held, after: maps() }));
      })();`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const { held, after } = JSON.parse(r.stdout) as { held: number; after: number };
    assert.equal(held, 50);
    assert.equal(after, 0);
  });

  it('accepts what the Rust crate accepts: any JSON order, whitespace padding, empty and zero-size tensors, escapes', () => {
    const header = `{${entry('b', 'F32', [1], 4, 8)}, ${entry('z', 'F16', [0, 5], 8, 8)},${entry('a', 'F32', [1], 0, 4)}}\t\n\r  `;
    const { result } = readRaw(build(header, 8));
    assert.deepEqual(Object.keys(result().tensors), ['a', 'b', 'z']);
    assert.deepEqual(Object.keys(readRaw(build('{}      ')).result().tensors), []);
    const names = readRaw(
      build(`{"__metadata__":{},"caf\\u00e9 \\ud83d\\ude00 \\"q\\"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1),
    );
    assert.deepEqual(Object.keys(names.result().tensors), ['café 😀 "q"']);
    // Names with characters JSON must escape round-trip through our writer.
    const p = tmpPath();
    const odd = 'tab\there "quote" back\\slash \u0001 é';
    writeSafetensors(p, { [odd]: { dtype: 'I8', shape: [1], data: new Int8Array([5]) } });
    assert.deepEqual(values(readSafetensors(p).tensors[odd]), [5]);
    // "__proto__" is an ordinary name: an own property, not a prototype change.
    const q = tmpPath();
    writeSafetensors(q, { ['__proto__']: { dtype: 'I8', shape: [1], data: new Int8Array([7]) } }, { ['__proto__']: 'x' });
    const r = readSafetensors(q);
    assert.deepEqual(Object.keys(r.tensors), ['__proto__']);
    assert.deepEqual(Object.keys(r.metadata), ['__proto__']);
    assert.equal(Object.getPrototypeOf(r.tensors), Object.prototype);
  });

  it('reads the other dtypes real files carry as the matching typed arrays', () => {
    const f64 = Buffer.from(new Float64Array([1 / 3]).buffer);
    const i64 = Buffer.from(new BigInt64Array([-5n]).buffer);
    const i32 = Buffer.from(new Int32Array([-7]).buffer);
    const header = `{${entry('d', 'F64', [1], 0, 8)},${entry('l', 'I64', [1], 8, 16)},${entry('i', 'I32', [1], 16, 20)},${entry('m', 'BOOL', [2], 20, 22)},${entry('u', 'U8', [1], 22, 23)}}`;
    const pad = ' '.repeat((8 - (Buffer.byteLength(header) % 8)) % 8);
    const file = Buffer.concat([build(header + pad), f64, i64, i32, Buffer.from([1, 0, 200])]);
    const t = readRaw(file).result().tensors;
    assert.ok(t.d?.data instanceof Float64Array && t.d.data[0] === 1 / 3);
    assert.ok(t.l?.data instanceof BigInt64Array && t.l.data[0] === -5n);
    assert.ok(t.i?.data instanceof Int32Array && t.i.data[0] === -7);
    assert.ok(t.m?.dtype === 'BOOL' && t.m.data instanceof Uint8Array);
    assert.deepEqual([...(t.m.data as Uint8Array)], [1, 0]);
    assert.deepEqual([...toFloat32('U8', t.u?.data as Uint8Array)], [200]);
    assert.deepEqual([...toFloat32('F64', t.d.data)], [Math.fround(1 / 3)]);
  });
});

describe('f16 / bf16 conversions', () => {
  it('f16 -> f32 is exact for all 65536 bit patterns (reference: Float16Array)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const ours = toFloat32('F16', all);
    const ref = new Float16(all.buffer);
    const bits = u32(ours);
    for (let i = 0; i < 65536; i++) {
      const want = at(ref, i);
      if (Number.isNaN(want)) {
        // Quiet NaN keeping sign and payload (torch does the same).
        const expected = (((i & 0x8000) << 16) | 0x7fc00000 | ((i & 0x3ff) << 13)) >>> 0;
        assert.equal(at(bits, i), expected, `f16 0x${i.toString(16)}`);
      } else {
        assert.ok(Object.is(at(ours, i), want), `f16 0x${i.toString(16)}: ${at(ours, i)} != ${want}`);
      }
    }
  });

  it('f32 -> f16 rounds to nearest even, with subnormals, overflow and NaN', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-0, 0x8000],
      [65504, 0x7bff],
      [65519.99, 0x7bff],
      [65520, 0x7c00], // tie between max and 2^16 rounds to even: inf
      [1e10, 0x7c00],
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // tie: to even (zero)
      [2 ** -25 * 1.0000001, 0x0001],
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 ulps: to even
      [1023 * 2 ** -24, 0x03ff],
      [2 ** -14, 0x0400],
      [1 + 2 ** -11, 0x3c00], // tie: to even
      [1 + 3 * 2 ** -11, 0x3c02], // tie: to even
      [1 + 2 ** -11 + 2 ** -20, 0x3c01],
      [1e-9, 0x0000],
      [-1e-9, 0x8000],
      [Number.POSITIVE_INFINITY, 0x7c00],
      [Number.NEGATIVE_INFINITY, 0xfc00],
      [Number.NaN, 0x7e00],
    ];
    const p = tmpPath();
    const src = new Float32Array(cases.map((c) => c[0]));
    const negNaN = f32FromBits([0xffc00000]);
    writeSafetensors(p, {
      h: { dtype: 'F16', shape: [cases.length], data: src },
      n: { dtype: 'F16', shape: [1], data: negNaN },
    });
    const t = readSafetensors(p).tensors;
    const got = values(t.h);
    cases.forEach(([x, want], i) => {
      assert.equal(got[i], want, `${x} -> 0x${got[i]?.toString(16)}, want 0x${want.toString(16)}`);
    });
    assert.deepEqual(values(t.n), [0xfe00]);
  });

  it('f32 -> f16 matches Float16Array on 200k random float32 values', () => {
    const n = 200_000;
    const bits = new Uint32Array(n);
    let s = 12345;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      const hi = s;
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      // Mix full-range patterns with values near the f16 range (exponents 100..150).
      bits[i] = i % 2 ? ((hi & 0x807fffff) | ((100 + (s % 51)) << 23)) >>> 0 : (hi ^ (s << 16)) >>> 0;
    }
    const src = new Float32Array(bits.buffer);
    const p = tmpPath();
    writeSafetensors(p, { h: { dtype: 'F16', shape: [n], data: src } });
    const ours = readSafetensors(p).tensors.h?.data as Uint16Array;
    const ref = new Uint16Array(new Float16(new ArrayBuffer(n * 2)).buffer);
    const refView = new Float16(ref.buffer);
    for (let i = 0; i < n; i++) refView[i] = at(src, i);
    for (let i = 0; i < n; i++) {
      if (Number.isNaN(at(src, i))) assert.equal(at(ours, i) & 0x7fff, 0x7e00);
      else if (at(ours, i) !== at(ref, i))
        assert.fail(`f32 0x${at(bits, i).toString(16)}: 0x${at(ours, i).toString(16)} != 0x${at(ref, i).toString(16)}`);
    }
  });

  it('f32 -> bf16 rounds to nearest even; bf16 -> f32 is exact', () => {
    const cases: [number, number][] = [
      [0x3f800000, 0x3f80],
      [0x3f808000, 0x3f80], // tie: to even
      [0x3f818000, 0x3f82], // tie: to even
      [0x3f808001, 0x3f81],
      [0x7f7fffff, 0x7f80], // max float rounds to inf
      [0x7f7f7fff, 0x7f7f],
      [0x00000001, 0x0000], // subnormal rounds down
      [0x00008000, 0x0000], // tie: to even
      [0x00018000, 0x0002],
      [0x80000000, 0x8000],
      [0x7f800000, 0x7f80],
      [0xff800000, 0xff80],
      [0x7fc00000, 0x7fc0],
      [0xffc00001, 0x7fc0], // NaN becomes torch's canonical NaN
      [0x7f800001, 0x7fc0],
    ];
    const p = tmpPath();
    writeSafetensors(p, { b: { dtype: 'BF16', shape: [cases.length], data: f32FromBits(cases.map((c) => c[0])) } });
    const got = readSafetensors(p).tensors.b?.data as Uint16Array;
    cases.forEach(([x, want], i) => {
      assert.equal(at(got, i), want, `0x${x.toString(16)} -> 0x${at(got, i).toString(16)}, want 0x${want.toString(16)}`);
    });
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = u32(toFloat32('BF16', all));
    for (let i = 0; i < 65536; i++) assert.equal(at(back, i), (i << 16) >>> 0);
  });
});

describe('malformed files', () => {
  const lora = 'base_model.model.layers.0.self_attn.q_proj.lora_A.weight';
  const table: [string, Buffer, RegExp][] = [
    ['empty file', Buffer.alloc(0), /file is 0 bytes, too short for the 8-byte header length/],
    ['truncated length prefix', Buffer.from([16, 0, 0, 0, 0]), /file is 5 bytes, too short/],
    ['header length beyond the file', build('{}', 0, 1000n), /header length 1000 runs past the end of the file \(10 bytes/],
    ['header length over 100 MB', build('{}', 0, 100_000_001n), /header length 100000001 is over the 100000000-byte limit/],
    ['header length 2^64-1', build('{}', 0, 2n ** 64n - 1n), /header length 18446744073709551615 is over the 100000000-byte limit/],
    ['empty header', build(''), /header must be a JSON object starting with '\{'/],
    ['header not an object', build('[1, 2]  '), /header must be a JSON object starting with '\{'/],
    ['invalid JSON', build('{"a":}'), /header is not valid JSON: unexpected character '\}', expected a value at byte 5 of the header/],
    ['truncated JSON', build(`{"w":{"dtype":"F32"`), /header is not valid JSON: expected ',' or '\}' .* at byte 19/],
    ['trailing garbage', build('{} x'), /header is not valid JSON: unexpected data after the top-level object at byte 3/],
    ['NUL padding', build('{}\0\0'), /header is not valid JSON: unexpected data after the top-level object/],
    ['trailing comma', build(`{${entry('w', 'F32', [1], 0, 4)},}`, 4), /header is not valid JSON: expected a string key/],
    ['bad UTF-8 in a name', build(Buffer.from('{"w\xff":{}}', 'latin1')), /header is not valid JSON: invalid UTF-8 in a string at byte 3/],
    ['overlong UTF-8', build(Buffer.from('{"\xc0\xaf":{}}', 'latin1')), /invalid UTF-8 in a string/],
    ['lone surrogate escape', build('{"\\ud800":{}}'), /header is not valid JSON: high surrogate not followed by a low surrogate/],
    ['raw control character', build('{"a\nb":{}}'), /header is not valid JSON: control character in a string/],
    [
      'duplicate tensor name',
      build(`{${entry('w', 'F32', [1], 0, 4)},${entry('w', 'F32', [1], 4, 8)}}`, 8),
      /tensor "w": appears twice in the header/,
    ],
    [
      'duplicate field',
      build('{"w":{"dtype":"F32","dtype":"F16","shape":[],"data_offsets":[0,4]}}', 4),
      /tensor "w": field "dtype" appears twice/,
    ],
    ['duplicate __metadata__', build('{"__metadata__":{},"__metadata__":{}}'), /"__metadata__" appears twice in the header/],
    ['duplicate metadata key', build('{"__metadata__":{"format":"pt","format":"tf"}}'), /"__metadata__" key "format" appears twice/],
    [
      'metadata with a non-string value',
      build('{"__metadata__":{"format":"pt","step":10}}'),
      /"__metadata__" value "step" must be a string, got a number/,
    ],
    ['metadata not an object', build('{"__metadata__":["pt"]}'), /"__metadata__" must be an object of strings, got an array/],
    ['entry not an object', build('{"w":5}'), /tensor "w": entry must be an object with dtype, shape and data_offsets, got a number/],
    [
      'deeply nested arrays',
      build(`{"w":${'['.repeat(100_000)}${']'.repeat(100_000)}}`),
      /tensor "w": entry must be an object .* got an array/,
    ],
    ['missing data_offsets', build('{"w":{"dtype":"F32","shape":[1]}}'), /tensor "w": missing field "data_offsets"/],
    [
      'unexpected field',
      build('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}', 4),
      /tensor "w": unexpected field "extra"/,
    ],
    ['unknown dtype', build(`{${entry('w', 'F33', [1], 0, 4)}}`, 4), /tensor "w": unknown dtype "F33" \(known: BOOL, U8, I8/],
    [
      'dtype not a string',
      build('{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}', 4),
      /tensor "w": dtype must be a string, got a number/,
    ],
    [
      'negative shape entry',
      build(`{${entry('w', 'F32', [2, -4], 0, 4)}}`, 4),
      /tensor "w": shape entry 1 is -4, not a non-negative integer/,
    ],
    ['float shape entry', build(`{${entry('w', 'F32', [2.5], 0, 4)}}`, 4), /tensor "w": shape entry 0 is 2.5, not a non-negative integer/],
    ['exponent shape entry', build('{"w":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}', 4), /tensor "w": shape entry 0 is 1e0/],
    [
      'string shape entry',
      build(`{${entry('w', 'F32', ['4'], 0, 4)}}`, 4),
      /tensor "w": shape entry 0 must be a non-negative integer, got a string/,
    ],
    [
      'shape entry over 2^64',
      build('{"w":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,0]}}'),
      /shape entry 0 is 18446744073709551616, not a non-negative integer that fits in 64 bits/,
    ],
    [
      'shape product overflow',
      build(`{${entry('w', 'F32', [4294967296, 4294967296, 16], 0, 0)}}`),
      /tensor "w": shape \[4294967296,4294967296,16\] x F32 needs more bytes than fit in 64 bits/,
    ],
    [
      'bytes overflow',
      build('{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}}'),
      /needs more bytes than fit in 64 bits/,
    ],
    [
      'three data_offsets',
      build('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', 8),
      /tensor "w": data_offsets must have exactly 2 entries/,
    ],
    [
      'offsets out of bounds',
      build(`{${entry('w', 'F32', [16], 0, 64)}}`, 32),
      /tensor "w": data_offsets \[0, 64\] run past the end of the data section \(32 bytes\)/,
    ],
    ['begin after end', build(`{${entry('w', 'F32', [1], 8, 4)}}`, 8), /tensor "w": data_offsets \[8, 4\] begin after they end/],
    ['negative offset', build(`{${entry('w', 'F32', [1], -4, 0)}}`, 8), /tensor "w": data_offsets begin is -4, not a non-negative integer/],
    [
      'span size mismatch',
      build(`{${entry(lora, 'F32', [8, 64], 0, 2044)}}`, 2044),
      new RegExp(
        `tensor "${lora.replaceAll('.', '\\.')}": shape \\[8,64\\] x F32 needs 2048 bytes but data_offsets \\[0, 2044\\] span 2044$`,
      ),
    ],
    [
      'overlapping spans',
      build(`{${entry('a', 'F32', [4], 0, 16)},${entry('b', 'F32', [4], 8, 24)}}`, 24),
      /tensor "b": data_offsets \[8, 24\] overlap tensor "a" at \[0, 16\]/,
    ],
    [
      'the same span twice',
      build(`{${entry('b', 'F32', [2], 0, 8)},${entry('a', 'F32', [2], 0, 8)}}`, 8),
      /tensor "a": data_offsets \[0, 8\] overlap tensor "b" at \[0, 8\]/,
    ],
    [
      'hole between spans',
      build(`{${entry('a', 'F32', [2], 0, 8)},${entry('b', 'F32', [2], 16, 24)}}`, 24),
      /tensor "b": data_offsets \[16, 24\] leave a hole of 8 bytes before them \(tensor "a" ends at 8\)/,
    ],
    [
      'hole at the start',
      build(`{${entry('a', 'F32', [2], 8, 16)}}`, 16),
      /tensor "a": data_offsets \[8, 16\] leave a hole of 8 bytes before them \(no tensor starts at 0\)/,
    ],
    [
      'unsorted spans with a hole',
      build(`{${entry('b', 'F32', [1], 12, 16)},${entry('a', 'F32', [2], 0, 8)}}`, 16),
      /tensor "b": data_offsets \[12, 16\] leave a hole of 4 bytes/,
    ],
    [
      'bytes after the last tensor',
      build(`{${entry('a', 'F32', [2], 0, 8)}}`, 12),
      /the data section is 12 bytes but the tensors cover only 8: the last 4 bytes belong to no tensor/,
    ],
    ['data but no tensors', build('{}', 3), /the data section is 3 bytes but the tensors cover only 0/],
  ];

  for (const [label, file, pattern] of table) {
    it(`rejects: ${label}`, () => expectInvalid(file, pattern, label));
  }

  it('has at least 20 cases', () => assert.ok(table.length >= 20));

  it('quotes hostile names and keeps messages short', () => {
    const name = `${'x'.repeat(5000)}\u0007`;
    const { result } = readRaw(build(`{"${name.replace('\u0007', '\\u0007')}":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4));
    assert.throws(result, (err: Error) => err.message.length < 600 && /tensor "x+\.\.\.": shape \[2\]/.test(err.message));
  });

  it('reports a missing file as not_found and a directory as internal', () => {
    assert.throws(
      () => readSafetensors(join(tmp, 'nope.safetensors')),
      (e: unknown) => e instanceof LowrankError && e.code === 'not_found',
    );
    assert.throws(
      () => readSafetensors(tmp),
      (e: unknown) => e instanceof LowrankError && e.code === 'internal' && /not a regular file/.test(e.message),
    );
  });
});

describe('writer inputs and atomicity', () => {
  const bad: [string, Record<string, unknown>, RegExp][] = [
    [
      'wrong typed array',
      { w: { dtype: 'F32', shape: [2], data: new Float64Array(2) } },
      /tensor "w": data for dtype F32 must be a Float32Array, got Float64Array/,
    ],
    [
      'I8 given as Uint8Array',
      { w: { dtype: 'I8', shape: [2], data: new Uint8Array(2) } },
      /data for dtype I8 must be a Int8Array, got Uint8Array/,
    ],
    [
      'BF16 given as Int16Array',
      { w: { dtype: 'BF16', shape: [2], data: new Int16Array(2) } },
      /Uint16Array \(raw bits\) or a Float32Array, got Int16Array/,
    ],
    [
      'shape/length mismatch',
      { w: { dtype: 'F32', shape: [2, 3], data: new Float32Array(5) } },
      /tensor "w": shape \[2,3\] needs 6 elements but data has 5/,
    ],
    [
      'negative dimension',
      { w: { dtype: 'F32', shape: [-1], data: new Float32Array(0) } },
      /shape\[0\] must be a non-negative integer, got -1/,
    ],
    [
      'fractional dimension',
      { w: { dtype: 'F32', shape: [1.5], data: new Float32Array(1) } },
      /shape\[0\] must be a non-negative integer, got 1.5/,
    ],
    [
      'unwritable dtype',
      { w: { dtype: 'F64', shape: [1], data: new Float64Array(1) } },
      /dtype must be one of F32, F16, BF16, I8, got "F64"/,
    ],
    ['missing data', { w: { dtype: 'F32', shape: [1] } }, /data for dtype F32 must be a Float32Array, got undefined/],
    ['entry not an object', { w: new Float32Array(1) }, /tensor "w" must be an object \{dtype, shape, data\}, got Float32Array/],
  ];
  for (const [label, tensors, pattern] of bad) {
    it(`refuses ${label} with a TypeError`, () => {
      assert.throws(
        () => writeSafetensors(tmpPath(), tensors as Record<string, WritableTensor>),
        (e: unknown) => {
          assert.ok(e instanceof TypeError, `${label}: ${e}`);
          assert.match(e.message, pattern);
          return true;
        },
      );
    });
  }

  it('refuses non-string metadata and a reserved tensor name', () => {
    const w = { w: { dtype: 'F32' as const, shape: [1], data: new Float32Array(1) } };
    assert.throws(
      () => writeSafetensors(tmpPath(), w, { step: 3 } as unknown as Record<string, string>),
      /metadata "step" must be a string, got a number/,
    );
    assert.throws(
      () => writeSafetensors(tmpPath(), { __metadata__: w.w }),
      (e: unknown) => e instanceof LowrankError && e.code === 'invalid_request' && /"__metadata__" is reserved/.test(e.message),
    );
  });

  it('replaces files atomically and leaves no temp files, also on failure', () => {
    const dir = join(tmp, 'atomic');
    mkdirSync(dir);
    const p = join(dir, 'adapter_model.safetensors');
    writeSafetensors(p, { w: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } });
    writeSafetensors(p, { w: { dtype: 'F32', shape: [2], data: new Float32Array([2, 3]) } });
    assert.deepEqual(values(readSafetensors(p).tensors.w), [2, 3]);
    const before = readFileSync(p);
    assert.throws(() => writeSafetensors(p, { w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), TypeError);
    assert.throws(
      () => writeSafetensors(join(dir, 'missing-dir', 'x.safetensors'), {}),
      (e: unknown) => e instanceof LowrankError && e.code === 'not_found' && /cannot create a temporary file/.test(e.message),
    );
    assert.deepEqual(readFileSync(p), before);
    assert.deepEqual(readdirSync(dir), ['adapter_model.safetensors']);
  });
});

/** Runs the Python reference (worker/test/python/safetensors_interop.py). */
function python(...args: string[]) {
  const py = process.env.LOWRANK_PYTHON;
  if (!py) {
    assert.fail('LOWRANK_PYTHON is not set: run the tests through `npm test` (scripts/test), which creates the PyTorch/safetensors venv');
  }
  const script = join(import.meta.dirname, 'python', 'safetensors_interop.py');
  const r = spawnSync(py, [script, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `python ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as {
    metadata: Record<string, string> | null;
    tensors: Record<string, { dtype: string; shape: number[]; bytes: string; as_f32?: string; as_f16?: string; as_bf16?: string }>;
  };
}
const isNaN16 = (bits: number, expMask: number) => (bits & expMask) === expMask && (bits & ~expMask & 0x7fff) !== 0;
const b64 = (s: string | undefined) => Buffer.from(s ?? '', 'base64');

describe('interop with Python safetensors and PEFT', () => {
  it('Python load_file and PEFT load_peft_weights read our files unchanged, and agree with our f16/bf16 rounding', () => {
    // Random float32 bit patterns (NaNs aside, compared by class below) plus edge values.
    const n = 4096;
    const bits = new Uint32Array(n);
    let s = 99;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      bits[i] = i % 2 ? s : ((s & 0x807fffff) | ((96 + (s % 64)) << 23)) >>> 0;
    }
    bits.set([0, 0x80000000, 1, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x477ff000, 0x33000000, 0x33000001]);
    const src = new Float32Array(bits.buffer);
    const tensors: Record<string, WritableTensor> = {
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': { dtype: 'F32', shape: [n / 64, 64], data: src },
      'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight': { dtype: 'F16', shape: [n / 64, 64], data: src },
      'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight': { dtype: 'BF16', shape: [n], data: src },
      'base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector': {
        dtype: 'I8',
        shape: [3],
        data: new Int8Array([-128, 0, 127]),
      },
      'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight': {
        dtype: 'F16',
        shape: [2],
        data: new Uint16Array([0x7c00, 0x0001]),
      },
    };
    const dir = join(tmp, 'peft-out');
    mkdirSync(dir);
    const p = join(dir, 'adapter_model.safetensors');
    writeSafetensors(p, tensors, { format: 'pt' });
    const ours = readSafetensors(p);

    for (const via of ['load', 'load-peft'] as const) {
      const py = python(via, via === 'load' ? p : dir);
      if (via === 'load') assert.deepEqual(py.metadata, { format: 'pt' });
      assert.deepEqual(Object.keys(py.tensors).sort(), Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(ours.tensors)) {
        const theirs = py.tensors[name];
        assert.ok(theirs, name);
        assert.equal(theirs.dtype, t.dtype, name);
        assert.deepEqual(theirs.shape, t.shape, name);
        assert.ok(b64(theirs.bytes).equals(bytes(t.data)), `${via}: ${name} bytes differ`);
      }
    }

    // torch's own rounding of the F32 source equals what our writer stored.
    const py = python('load', p);
    const f32 = py.tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'];
    const torchF16 = new Uint16Array(new Uint8Array(b64(f32?.as_f16)).buffer);
    const torchBF16 = new Uint16Array(new Uint8Array(b64(f32?.as_bf16)).buffer);
    const ourF16 = ours.tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight']?.data as Uint16Array;
    const ourBF16 = ours.tensors['base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight']?.data as Uint16Array;
    // NaN only by class: torch's own scalar and vectorized paths disagree on NaN bits
    // (e.g. 0x7fc0 vs 0xffff for bf16), so no single pattern is "torch's".
    for (let i = 0; i < n; i++) {
      const msg = `f32 0x${at(bits, i).toString(16)}`;
      if (Number.isNaN(at(src, i))) {
        assert.ok(isNaN16(at(ourF16, i), 0x7c00) && isNaN16(at(torchF16, i), 0x7c00), `${msg} -> f16 NaN`);
        assert.ok(isNaN16(at(ourBF16, i), 0x7f80) && isNaN16(at(torchBF16, i), 0x7f80), `${msg} -> bf16 NaN`);
      } else {
        assert.equal(at(ourF16, i), at(torchF16, i), `${msg} -> f16`);
        assert.equal(at(ourBF16, i), at(torchBF16, i), `${msg} -> bf16`);
      }
    }
  });

  it('reads files written by Python save_file exactly, and converts f16/bf16 as torch does', () => {
    const p = tmpPath('python');
    const py = python('save', p);
    const ours = readSafetensors(p);
    assert.deepEqual(ours.metadata, { format: 'pt' });
    assert.deepEqual(Object.keys(ours.tensors).sort(), Object.keys(py.tensors).sort());
    for (const [name, theirs] of Object.entries(py.tensors)) {
      const t = ours.tensors[name] as Tensor;
      assert.equal(t.dtype, theirs.dtype, name);
      assert.deepEqual(t.shape, theirs.shape, name);
      assert.ok(bytes(t.data).equals(b64(theirs.bytes)), `${name}: bytes differ`);
      if (t.dtype === 'F16' || t.dtype === 'BF16') {
        const ours32 = toFloat32(t.dtype, t.data);
        const torch32 = new Float32Array(new Uint8Array(b64(theirs.as_f32)).buffer);
        assert.equal(ours32.length, torch32.length);
        for (let i = 0; i < ours32.length; i++) {
          // Exact bits, NaN by class (torch's NaN bits depend on its code path).
          const same = Number.isNaN(at(torch32, i)) ? Number.isNaN(at(ours32, i)) : Object.is(at(ours32, i), at(torch32, i));
          assert.ok(same, `${name}[${i}]: ${t.dtype} -> F32 gives ${at(ours32, i)}, torch ${at(torch32, i)}`);
        }
      }
    }
  });

  it('rewrites a Python file byte for byte (same layout, same header)', () => {
    const p = tmpPath('python');
    python('save', p, '--writable');
    const read = readSafetensors(p);
    const q = tmpPath('rewritten');
    writeSafetensors(q, read.tensors as Record<string, WritableTensor>, read.metadata);
    assert.ok(readFileSync(q).equals(readFileSync(p)), 'our file differs from the one Python wrote');
  });
});
