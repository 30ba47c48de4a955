/** Checks the file list of a version: safe relative paths, no duplicates, sane sizes. */
import type { FieldError } from '@lowrank/crds/errors';
import { LowrankError } from '@lowrank/crds/errors';

export interface VersionFileInput {
  path: string;
  digest: string;
  size: number;
}

const MAX_FILES = 10_000;
const SEGMENT_RE = /^[A-Za-z0-9._+=@-][A-Za-z0-9._ +=@-]*$/;

export function checkFiles(files: VersionFileInput[]): void {
  const errors: FieldError[] = [];
  if (files.length === 0) errors.push({ path: 'files', message: 'a version needs at least one file' });
  if (files.length > MAX_FILES) errors.push({ path: 'files', message: `a version may have at most ${MAX_FILES} files` });
  const seen = new Set<string>();
  files.forEach((f, i) => {
    const at = `files[${i}].path`;
    const segments = f.path.split('/');
    if (f.path.length > 1024 || segments.some((s) => s === '' || s === '.' || s === '..' || !SEGMENT_RE.test(s))) {
      errors.push({
        path: at,
        message: `"${f.path.slice(0, 200)}" is not a safe relative path (segments of letters, digits, . _ - + = @ and spaces; no "..", no leading "/")`,
      });
    }
    if (seen.has(f.path)) errors.push({ path: at, message: `"${f.path}" appears twice` });
    seen.add(f.path);
    if (!Number.isSafeInteger(f.size) || f.size < 0)
      errors.push({ path: `files[${i}].size`, message: 'size must be a non-negative integer' });
  });
  if (errors.length > 0)
    throw new LowrankError(
      'invalid_request',
      `the version's file list is invalid: ${errors.length} problem${errors.length === 1 ? '' : 's'}`,
      { errors },
    );
}
