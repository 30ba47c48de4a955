/**
 * Vite builds the catalog into web/dist, which the registry serves at /. `npx vite` in web/
 * runs a dev server that forwards API calls to the registry (LOWRANK_REGISTRY, default the
 * one-command run's http://127.0.0.1:8080).
 */
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const registry = process.env.LOWRANK_REGISTRY ?? 'http://127.0.0.1:8080';

export default defineConfig({
  root: import.meta.dirname,
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  server: { proxy: { '/v1': registry, '/api': registry } },
});
