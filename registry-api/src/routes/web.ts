/**
 * The web catalog (web/dist, built by Vite) served by the registry: hashed assets with long
 * caching, and index.html for any other GET that no API route answered (the app routes in the
 * browser). API paths (/v1, /api, /healthz, /readyz) and Hugging Face resolve URLs never fall
 * back to the page, so a wrong API URL still gets its problem+json 404.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import express, { type Router } from 'express';

const NOT_PAGES = ['/v1', '/api', '/healthz', '/readyz', '/assets'];
const isNotPage = (path: string) => NOT_PAGES.some((p) => path === p || path.startsWith(`${p}/`)) || path.includes('/resolve/');

/** A router for the built catalog, or null when `dist` has no index.html (the bundle was not built). */
export function webCatalog(dist: string): Router | null {
  const index = join(dist, 'index.html');
  if (!existsSync(index)) return null;
  const router = express.Router();
  // Vite names assets by content hash, so they never change under one URL.
  router.use('/assets', express.static(join(dist, 'assets'), { immutable: true, maxAge: '365d', index: false }));
  router.use(express.static(dist, { index: false, maxAge: 0 }));
  router.use((req, res, next) => {
    if ((req.method !== 'GET' && req.method !== 'HEAD') || isNotPage(req.path) || !req.accepts('html')) return next();
    res.set('Cache-Control', 'no-cache').sendFile(index);
  });
  return router;
}
