/** Request and response shapes of the registry API, from its OpenAPI document (registry-api/gen/api.ts). */
import type { components } from '../gen/api.ts';

export type Schemas = components['schemas'];
export type RepositoryCreate = Schemas['RepositoryCreate'];
export type VersionCommit = Schemas['VersionCommit'];
