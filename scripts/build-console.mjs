// Builds the browser console into dist/dashboard: the TypeScript pages
// bundled with the typed API client and uPlot (esbuild), the stylesheet with
// uPlot's, and the HTML pages as they are.
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const src = path.join(root, 'src', 'dashboard');
const out = path.join(root, 'dist', 'dashboard');
fs.rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: [path.join(src, 'app.ts'), path.join(src, 'login.ts'), path.join(src, 'display.ts'), path.join(src, 'app.css')],
  outdir: out,
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
});
for (const page of ['index.html', 'login.html', 'display.html']) fs.copyFileSync(path.join(src, page), path.join(out, page));
