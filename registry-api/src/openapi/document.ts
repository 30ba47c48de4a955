/** The OpenAPI 3.1 document (registry-api/openapi.yaml), the source of truth for routes. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export const OPENAPI_PATH = join(import.meta.dirname, '..', '..', 'openapi.yaml');

export interface Operation {
  operationId: string;
  method: 'get' | 'head' | 'post' | 'put' | 'patch' | 'delete';
  /** As written in the document: /v1/repos/{namespace}/{name}. */
  path: string;
  /** none: anyone; user: any signed-in caller; read/write/admin: on the repository named; site: site admins. */
  auth: 'none' | 'user' | 'read' | 'write' | 'admin' | 'site';
  parameters: { name: string; in: 'path' | 'query' | 'header'; required?: boolean; schema: object }[];
  requestContentType?: string;
  requestSchema?: object;
}

export const openapiDocument = parse(readFileSync(OPENAPI_PATH, 'utf8')) as {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, object> };
};

const METHODS = ['get', 'head', 'post', 'put', 'patch', 'delete'] as const;

export function operations(): Operation[] {
  const out: Operation[] = [];
  for (const [path, item] of Object.entries(openapiDocument.paths)) {
    const shared = (item.parameters ?? []) as Operation['parameters'];
    for (const method of METHODS) {
      const op = item[method] as Record<string, unknown> | undefined;
      if (!op) continue;
      const content = (op.requestBody as { content?: Record<string, { schema?: object }> } | undefined)?.content ?? {};
      const [contentType, media] = Object.entries(content)[0] ?? [];
      out.push({
        operationId: op.operationId as string,
        method,
        path,
        auth: (op['x-lowrank-auth'] as Operation['auth']) ?? 'none',
        parameters: [...shared, ...((op.parameters ?? []) as Operation['parameters'])],
        ...(contentType ? { requestContentType: contentType } : {}),
        ...(media?.schema ? { requestSchema: media.schema } : {}),
      });
    }
  }
  return out;
}

/**
 * Express 5 route syntax: literal colons escaped (`/v1/jobs:validate` is a custom method,
 * not a parameter), {x} -> :x, and a trailing {path} matches the rest (*path).
 */
export function expressPath(path: string): string {
  return path
    .replaceAll(':', '\\:')
    .replace(/\{path\}$/, '*path')
    .replace(/\{([A-Za-z0-9_]+)\}/g, ':$1');
}
