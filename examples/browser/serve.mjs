#!/usr/bin/env node
// Serves the example shop and the built browser SDK (sdks/core/dist/gamify.min.js):
//   node examples/browser/serve.mjs [port]        (default EXAMPLE_PORT or 8080)
// Build the SDK first: (cd sdks && npm ci && npm run build).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const files = {
  '/': [here('./index.html'), 'text/html; charset=utf-8'],
  '/index.html': [here('./index.html'), 'text/html; charset=utf-8'],
  '/app.js': [here('./app.js'), 'text/javascript; charset=utf-8'],
  '/style.css': [here('./style.css'), 'text/css; charset=utf-8'],
  '/gamify.min.js': [here('../../sdks/core/dist/gamify.min.js'), 'text/javascript; charset=utf-8'],
  '/other.html': [here('./other.html'), 'text/html; charset=utf-8'],
};

/** Starts the server; resolves to { url, close }. Port 0 picks a free port. */
export function serve({ port = 8080, host = '127.0.0.1' } = {}) {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? '/', 'http://x').pathname;
    const file = files[path];
    if (!file || request.method !== 'GET') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    try {
      const body = await readFile(file[0]);
      response.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-store' }).end(body);
    } catch {
      response.writeHead(500, { 'content-type': 'text/plain' }).end(`missing ${path}: build the SDK (cd sdks && npm run build)\n`);
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve({
        url: `http://${host}:${address.port}`,
        close: () => new Promise((done) => { server.closeAllConnections(); server.close(() => done()); }),
      });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const port = Number(process.argv[2] ?? process.env.EXAMPLE_PORT ?? 8080);
  const { url } = await serve({ port });
  console.log(`example shop: ${url}/?host=http://127.0.0.1:${process.env.PORT ?? 3000}&key=<publishable key>`);
}
