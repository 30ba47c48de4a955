/**
 * Evaluates a CRD's `x-kubernetes-validations` rules the way the apiserver does:
 * `self` is the node's value, `oldSelf` its previous value on update (rules that read
 * `oldSelf` are transition rules and are skipped on create), integers are CEL ints.
 * Uses @marcbachmann/cel-js; rules are parsed once and cached.
 */
import { parse } from '@marcbachmann/cel-js';
import type { SchemaNode } from './schema-node.ts';

type Program = ReturnType<typeof parse>;
const programs = new Map<string, Program>();

function program(rule: string): Program {
  let p = programs.get(rule);
  if (!p) {
    p = parse(rule);
    programs.set(rule, p);
  }
  return p;
}

export function isTransitionRule(rule: string): boolean {
  return /\boldSelf\b/.test(rule);
}

/** Converts JSON to CEL values typed by the schema (integer fields become CEL ints). */
export function toCel(value: unknown, node: SchemaNode | undefined): unknown {
  if (value === null || value === undefined || !node) return value;
  if (typeof value === 'number') {
    const intTyped = node.type === 'integer' || (node['x-kubernetes-int-or-string'] && Number.isInteger(value));
    return intTyped && Number.isInteger(value) ? BigInt(value) : value;
  }
  if (Array.isArray(value)) return value.map((v) => toCel(v, node.items));
  if (typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const child = node.properties?.[k] ?? (typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined);
      out[k] = toCel(v, child);
    }
    return out;
  }
  return value;
}

export type RuleOutcome = { ok: true } | { ok: false; evaluationError?: string };

export function evaluateRule(rule: string, self: unknown, oldSelf: unknown, node: SchemaNode): RuleOutcome {
  try {
    const vars: Record<string, unknown> = { self: toCel(self, node) };
    if (oldSelf !== undefined) vars.oldSelf = toCel(oldSelf, node);
    const result = program(rule)(vars);
    return result === true ? { ok: true } : { ok: false };
  } catch (err) {
    return { ok: false, evaluationError: err instanceof Error ? err.message : String(err) };
  }
}
