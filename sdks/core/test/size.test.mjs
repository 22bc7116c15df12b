// The <script> bundle's budget: at most 5 KB minified and gzipped. Run after `npm run build`.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';

const LIMIT = 5 * 1024;

test('dist/gamify.min.js is at most 5 KB min+gzip', () => {
  const file = new URL('../dist/gamify.min.js', import.meta.url);
  const source = readFileSync(file);
  const gzipped = gzipSync(source, { level: 9 }).length;
  console.log(`gamify.min.js: ${source.length} bytes minified, ${gzipped} bytes gzipped (limit ${LIMIT})`);
  assert.ok(gzipped <= LIMIT, `gamify.min.js is ${gzipped} bytes gzipped, over the ${LIMIT}-byte budget`);
});

test('the bundle defines window.Gamify as the class', async () => {
  const { runInNewContext } = await import('node:vm');
  const window = {};
  window.window = window;
  runInNewContext(readFileSync(new URL('../dist/gamify.min.js', import.meta.url), 'utf8'), window);
  assert.equal(typeof window.Gamify, 'function');
  assert.throws(() => new window.Gamify({ apiKey: `sk_live_${'a'.repeat(64)}` }), /secret key/);
});
