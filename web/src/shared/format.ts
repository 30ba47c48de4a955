/** Display formats: sizes, dates, digests, numbers. */

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export function date(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().slice(0, 16).replace('T', ' ');
}

export function shortDigest(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

export function num(x: number, digits = 4): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? x.toExponential(2) : Number(x.toPrecision(digits)).toString();
}

/** "ns/name@3" into its parts, or null. */
export function parseVersionRef(ref: string): { namespace: string; name: string; number: string } | null {
  const m = /^([a-z0-9-]+)\/([a-z0-9-]+)@([A-Za-z0-9._-]+)$/.exec(ref);
  return m ? { namespace: m[1] ?? '', name: m[2] ?? '', number: m[3] ?? '' } : null;
}
