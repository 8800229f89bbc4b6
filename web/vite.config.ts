import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

// Everything the backend serves; in development Vite forwards these to chat-server
// so the browser sees one origin, exactly as in production.
const backend = 'http://127.0.0.1:8000';
const proxied = ['/api', '/chat', '/healthz', '/readyz', '/openapi.json', '/docs', '/metrics'];

export default defineConfig({
  plugins: [react()],
  server: {
    port: 3000,
    strictPort: true,
    proxy: Object.fromEntries(proxied.map((p) => [p, { target: backend, changeOrigin: false }])),
  },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: false,
  },
  test: {
    environment: 'jsdom',
    include: ['test/**/*.test.{ts,tsx}'],
    setupFiles: ['test/setup.ts'],
  },
});
