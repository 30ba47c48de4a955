/**
 * The registry client, typed by the paths generated from registry-api/openapi.yaml
 * (registry-api/gen/api.ts): a call names the path template, and TypeScript checks its
 * parameters and response. Every request carries the signed-in token.
 */
import createClient from 'openapi-fetch';
import type { components, paths } from '../../../registry-api/gen/api.ts';
import { getToken } from './token.ts';

export type Schemas = components['schemas'];
export type Problem = Schemas['Problem'];
export type Repository = Schemas['Repository'];
export type Version = Schemas['Version'];
export type LineageGraph = Schemas['LineageGraph'];
export type JobRecord = Schemas['JobRecord'];
export type FieldError = Schemas['FieldError'];

export const api = createClient<paths>({ baseUrl: window.location.origin });

api.use({
  onRequest({ request }) {
    const token = getToken();
    if (token) request.headers.set('Authorization', `Bearer ${token}`);
    return request;
  },
});

/** Headers for the few calls made with fetch itself (Server-Sent Events, raw file text). */
export function authHeaders(): Record<string, string> {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}
