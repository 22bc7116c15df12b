#!/usr/bin/env node
// The example shop: its pages, the built browser SDK (sdks/core/dist/gamify.min.js), and a small
// server side that holds the project's SECRET key (never sent to the browser):
//
//   POST /api/purchase {userId, amount}  sends the trusted `purchase` event with the secret key
//                                        → 202 {id} (the event's id, for its outcomes)
//   POST /api/token {userId}             a user token (ut_…) for that user's progress and
//                                        leaderboards → 201 {token, expiresAt}
//   GET  /api/config                     what the page needs: the publishable key, the API's
//                                        address for the page, the levels and badges of rules.json
//   /v1/…                                forwarded to the API as is, so the page can use the shop's
//                                        own origin as the SDK's host (no cross-origin requests)
//
// A real shop mints a token only for the user its own session signed in, and sends a purchase
// only once it was paid; this demo trusts whatever userId the page sends.
//
//   node examples/browser/serve.mjs [port] [--api URL] [--publishable-key pk_live_…] [--secret-key sk_live_…]
//
// Defaults: EXAMPLE_PORT or 8080; GAMIFY_HOST (else http://127.0.0.1:$PORT, else :3000),
// GAMIFY_PK, GAMIFY_SK. Without a secret key the shop still sends browser events; purchases and
// progress need it. Build the SDK first: (cd sdks && npm ci && npm run build).
import { createServer, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
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

const MAX_BODY = 10_000;
const USER_ID = /^[^\u0000-\u001f]{1,200}$/;

/** The levels and badges of the rules the shop publishes (dev.sh and the tests publish this file). */
function rulesSummary() {
  try {
    const rules = JSON.parse(readFileSync(here('./rules.json'), 'utf8'));
    const xp = (rules.points ?? []).find((p) => p.key === 'xp');
    return {
      levels: (xp?.levels ?? []).map((l) => ({ key: l.key, at: l.at })),
      achievements: (rules.achievements ?? []).map((a) => ({ key: a.key, name: a.name })),
    };
  } catch {
    return { levels: [], achievements: [] };
  }
}

function json(response, status, body) {
  response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
}

function problem(response, status, code, message) {
  json(response, status, { error: { code, message } });
}

/** The request's JSON object body, or null after answering 4xx. */
async function readJson(request, response) {
  if (!/^application\/json\b/i.test(request.headers['content-type'] ?? '')) {
    // Also keeps other sites' plain form posts out: a JSON request from them needs a preflight.
    problem(response, 415, 'unsupported_media_type', 'send Content-Type: application/json');
    return null;
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of request) {
    size += chunk.length;
    if (size > MAX_BODY) {
      problem(response, 413, 'payload_too_large', `at most ${MAX_BODY} bytes`);
      return null;
    }
    chunks.push(chunk);
  }
  try {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (body && typeof body === 'object' && !Array.isArray(body)) return body;
  } catch {
    // answered below
  }
  problem(response, 400, 'invalid_request', 'the body must be a JSON object');
  return null;
}

/** Sends a request to the API with the secret key and relays its status and body. */
async function callApi(response, api, secretKey, path, body) {
  let answer;
  try {
    answer = await fetch(`${api}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': secretKey },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
  } catch (error) {
    problem(response, 502, 'api_unreachable', `the Gamify API at ${api} did not answer: ${error.message}`);
    return;
  }
  const text = await answer.text();
  response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json', 'cache-control': 'no-store' }).end(text);
}

/** Forwards a /v1/ request to the API, streaming both ways. */
function forward(request, response, api) {
  const target = new URL(request.url ?? '/', api);
  const headers = { ...request.headers, host: target.host };
  delete headers.connection;
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const upstream = send(target, { method: request.method, headers }, (answer) => {
    response.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(response);
  });
  upstream.on('error', (error) => {
    if (!response.headersSent) problem(response, 502, 'api_unreachable', `the Gamify API at ${api} did not answer: ${error.message}`);
    else response.destroy();
  });
  request.pipe(upstream);
}

/**
 * Starts the server; resolves to { url, close }. Port 0 picks a free port.
 * `api`: the Gamify API's base URL; `publishableKey` is handed to the page; `secretKey` stays here.
 */
export function serve({ port = 8080, host = '127.0.0.1', api, publishableKey, secretKey } = {}) {
  api = api?.replace(/\/+$/, '');
  const summary = rulesSummary();
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? '/', 'http://x').pathname;
    try {
      if (path.startsWith('/v1/') && api) {
        forward(request, response, api);
        return;
      }
      if (path === '/api/config' && request.method === 'GET') {
        json(response, 200, {
          publishableKey: publishableKey ?? null,
          // The page talks to the API through this server (/v1/ is forwarded) when it knows one.
          sameOriginApi: !!api,
          purchases: !!(api && secretKey),
          ...summary,
        });
        return;
      }
      if (path === '/api/purchase' || path === '/api/token') {
        if (request.method !== 'POST') return problem(response, 405, 'method_not_allowed', 'POST only');
        if (!api || !secretKey) {
          return problem(response, 503, 'no_secret_key', 'the shop server was started without the API address and a secret key (--api, --secret-key)');
        }
        const body = await readJson(request, response);
        if (!body) return;
        const userId = body.userId;
        if (typeof userId !== 'string' || !USER_ID.test(userId)) {
          return problem(response, 400, 'invalid_request', 'userId: a non-empty string of at most 200 characters');
        }
        if (path === '/api/token') {
          return await callApi(response, api, secretKey, `/v1/users/${encodeURIComponent(userId)}/tokens`, {});
        }
        const amount = body.amount;
        // Whole euros in this shop (what the rules' revenue counts); integers, as @gamify/node requires.
        if (!Number.isInteger(amount) || amount <= 0 || amount > 1_000_000) {
          return problem(response, 400, 'invalid_request', 'amount: a whole number above 0, at most 1000000');
        }
        const orderId = `o-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
        return await callApi(response, api, secretKey, '/v1/events/track', {
          event: 'purchase',
          userId,
          // One order, one event, however often this request is retried by a payment callback.
          messageId: `order-${orderId}`,
          properties: { orderId, amount, currency: 'EUR' },
        });
      }
      if (path === '/favicon.ico') {
        response.writeHead(204).end();
        return;
      }
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
    } catch (error) {
      if (!response.headersSent) problem(response, 500, 'internal', String(error?.message ?? error));
      else response.destroy();
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

/** `[port] [--api URL] [--publishable-key KEY] [--secret-key KEY]`, the flags also as `--flag=value`. */
function parseArgs(argv) {
  const options = {};
  const names = { '--api': 'api', '--publishable-key': 'publishableKey', '--secret-key': 'secretKey', '--port': 'port' };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    if (names[flag]) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new Error(`${flag} needs a value`);
      options[names[flag]] = value;
    } else if (/^\d+$/.test(argv[i])) {
      options.port = argv[i];
    } else {
      throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return options;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (error) {
    console.error(`serve.mjs: ${error.message}\nusage: node examples/browser/serve.mjs [port] [--api URL] [--publishable-key pk_live_…] [--secret-key sk_live_…]`);
    process.exit(2);
  }
  const port = Number(args.port ?? process.env.EXAMPLE_PORT ?? 8080);
  const api = args.api ?? process.env.GAMIFY_HOST ?? `http://127.0.0.1:${process.env.PORT ?? 3000}`;
  const publishableKey = args.publishableKey ?? process.env.GAMIFY_PK;
  const secretKey = args.secretKey ?? process.env.GAMIFY_SK;
  if (secretKey && !secretKey.startsWith('sk_')) {
    console.error('serve.mjs: --secret-key / GAMIFY_SK must be a secret key (sk_live_…)');
    process.exit(2);
  }
  const { url } = await serve({ port, api, publishableKey, secretKey });
  if (publishableKey) {
    console.log(`example shop: ${url}/ (API ${api}${secretKey ? '' : '; no secret key: no purchases or progress'})`);
  } else {
    console.log(`example shop: ${url}/?key=<publishable key> (API ${api}, forwarded through /v1/)`);
  }
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
