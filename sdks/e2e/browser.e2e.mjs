// The example shop (examples/browser) in Debian's headless Chromium, driven by playwright-core,
// against the real platform that scripts/sdk-test.sh started (gamify-api, gamify-worker,
// gamify-engine, and the shop's rules, examples/browser/rules.json, published for the project).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { serve } from '../../examples/browser/serve.mjs';
import { HOST, OTHER_SK, PK, SK, events, waitFor } from './platform.mjs';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let browser;
let site;
let proxy;

/**
 * A forwarding proxy to the API that records what reaches it, and can be stopped (connections
 * refused) and started again on the same port.
 */
function stoppableProxy(target) {
  let server;
  let port = 0;
  const sockets = new Set();
  const seen = [];
  return {
    seen,
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    async start() {
      server = createServer((req, res) => {
        const chunks = [];
        req.on('data', (chunk) => chunks.push(chunk));
        req.on('end', () => {
          const body = Buffer.concat(chunks);
          seen.push({ method: req.method, path: req.url, headers: req.headers, body: body.toString('utf8') });
          const headers = { ...req.headers, host: new URL(target).host };
          const upstream = httpRequest(new URL(req.url, target), { method: req.method, headers }, (answer) => {
            res.writeHead(answer.statusCode, answer.headers);
            answer.pipe(res);
          });
          upstream.on('error', () => res.destroy());
          upstream.end(body);
        });
      });
      server.on('connection', (socket) => {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
      });
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
      });
      port = server.address().port;
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function shopUrl(host, extra = {}) {
  return `${site.url}/?${new URLSearchParams({ key: PK(), host, ...extra })}`;
}

/** A fresh browser context (its own localStorage) with what the page logs and sends recorded. */
async function open(url, contextOptions = {}) {
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  const log = { warnings: [], requests: [] };
  page.on('console', (message) => {
    if (message.type() === 'warning') log.warnings.push(message.text());
  });
  context.on('request', (request) => {
    if (request.method() === 'POST') {
      log.requests.push({ url: request.url(), type: request.resourceType(), headers: request.headers(), body: request.postData() ?? '' });
    }
  });
  await page.goto(url);
  await page.waitForFunction(() => window.gamify !== undefined);
  return { context, page, log };
}

async function rowsFor(anonymousId, secretKey = SK()) {
  return (await events(secretKey, {}, 2000)).filter((e) => e.anonymousId === anonymousId);
}

before(async () => {
  // The shop's server holds the secret key (purchases, user tokens) and forwards /v1/ to the API.
  site = await serve({ port: 0, api: HOST(), publishableKey: PK(), secretKey: SK() });
  proxy = stoppableProxy(HOST());
  await proxy.start();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await site?.close();
  await proxy?.stop().catch(() => undefined);
});

test('the shop tracks page_view and cart_add → processed rows for its project and anonymous id; purchase is not sent', async () => {
  const { context, page, log } = await open(shopUrl(HOST(), { flushAt: '2', flushInterval: '300' }));
  const anonymousId = await page.evaluate(() => window.gamify.anonymousId);
  assert.match(anonymousId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  await page.click('article[data-sku="mug-owl"] button.add');
  await page.click('#purchase-browser');
  await page.click('article[data-sku="tee-blue"] button.view');

  const rows = await waitFor('page_view, cart_add and product_view processed', async () => {
    const found = await rowsFor(anonymousId);
    const names = found.filter((e) => e.status === 'processed').map((e) => e.event);
    return ['page_view', 'cart_add', 'product_view'].every((n) => names.includes(n)) ? found : null;
  });
  const cartAdd = rows.find((e) => e.event === 'cart_add');
  assert.equal(cartAdd.properties.sku, 'mug-owl');
  assert.equal(cartAdd.source.keyType, 'publishable');
  assert.equal(rows.find((e) => e.event === 'page_view').properties.path, '/');

  // The trusted event: a warning, and nothing sent.
  assert.ok(
    log.warnings.some((w) => /"purchase" is a trusted event.*secret key/.test(w)),
    `no warning about purchase in ${JSON.stringify(log.warnings)}`,
  );
  assert.ok(!log.requests.some((r) => r.body.includes('"purchase"')), 'a request carried the purchase');
  assert.ok(!rows.some((e) => e.event === 'purchase'));

  // Another project's secret key sees none of it.
  assert.deepEqual(await rowsFor(anonymousId, OTHER_SK()), []);
  await context.close();
});

test('a publishable key used directly with fetch for purchase gets 403 event_requires_secret_key', async () => {
  const { context, page } = await open(shopUrl(HOST()));
  const answer = await page.evaluate(
    async ({ host, key }) => {
      const response = await fetch(`${host}/v1/events/track`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'x-api-key': key },
        body: JSON.stringify({ event: 'purchase', anonymousId: 'cheater', properties: { orderId: 'o-1', amount: 1, currency: 'EUR' } }),
      });
      return { status: response.status, body: await response.json() };
    },
    { host: HOST(), key: PK() },
  );
  assert.equal(answer.status, 403);
  assert.equal(answer.body.error.code, 'event_requires_secret_key');
  await context.close();
});

test('events queued while the API is unreachable survive a reload and are delivered when it is back', async () => {
  await proxy.stop();
  const { context, page } = await open(shopUrl(proxy.url, { flushAt: '1', flushInterval: '300' }));
  const anonymousId = await page.evaluate(() => window.gamify.anonymousId);
  await page.click('article[data-sku="cap-red"] button.add');
  await page.click('article[data-sku="tee-blue"] button.add');
  // page_view and two cart_add, all failed at least once and kept.
  await waitFor('3 calls queued', () => page.evaluate(() => window.gamify.queued >= 3));
  const stored = () =>
    page.evaluate(() => {
      const key = Object.keys(localStorage).find((k) => k.startsWith('gamify:') && k.endsWith(':queue'));
      return JSON.parse(localStorage.getItem(key) ?? '[]').map((c) => c.b.messageId);
    });
  const before = await stored();
  assert.equal(before.length, 3);

  await page.reload();
  await page.waitForFunction(() => window.gamify !== undefined);
  assert.equal(await page.evaluate(() => window.gamify.anonymousId), anonymousId);
  const afterReload = await stored();
  for (const id of before) assert.ok(afterReload.includes(id), `${id} lost in the reload`);

  await proxy.start();
  // No help from the test: the SDK's own retries deliver them.
  await waitFor(
    'queued events delivered after the API came back',
    async () => {
      const ids = new Set((await rowsFor(anonymousId)).filter((e) => e.status === 'processed').map((e) => e.messageId));
      return before.every((id) => ids.has(id));
    },
    { timeout: 90_000, interval: 500 },
  );
  await waitFor('the queue emptied', () => page.evaluate(() => window.gamify.queued === 0));
  await context.close();
});

test('events queued at pagehide are delivered by the unload path (text/plain, key in the body)', async () => {
  // Never flushed by size or timer: only the unload path can send them. Through the proxy, which
  // shows what reached the gateway.
  const { context, page } = await open(shopUrl(proxy.url, { flushAt: '1000', flushInterval: '3600000' }));
  const anonymousId = await page.evaluate(() => window.gamify.anonymousId);
  await page.click('article[data-sku="mug-owl"] button.view');
  await page.click('article[data-sku="mug-owl"] button.add');
  assert.equal(await page.evaluate(() => window.gamify.queued), 3);
  const ours = () => proxy.seen.filter((r) => r.method === 'POST' && r.body.includes(anonymousId));
  assert.equal(ours().length, 0, 'sent before pagehide');

  const mark = proxy.seen.length;
  await page.goto(`${site.url}/other.html`); // pagehide on the shop

  const [unload] = await waitFor('the unload request at the gateway', () => (ours().length ? ours() : null));
  assert.equal(unload.path, '/v1/events/batch');
  assert.match(unload.headers['content-type'] ?? '', /^text\/plain/);
  assert.equal(unload.headers['x-api-key'], undefined);
  assert.equal(unload.headers.authorization, undefined);
  const body = JSON.parse(unload.body);
  assert.equal(body.apiKey, PK());
  assert.deepEqual(body.batch.map((e) => e.event), ['page_view', 'product_view', 'cart_add']);
  // No preflight went out for it (a preflighted beacon is silently dropped by browsers).
  assert.ok(!proxy.seen.slice(mark).some((r) => r.method === 'OPTIONS'), 'preflighted');

  await waitFor('events sent at pagehide processed', async () => {
    const names = (await rowsFor(anonymousId)).filter((e) => e.status === 'processed').map((e) => e.event).sort();
    return JSON.stringify(names) === JSON.stringify(['cart_add', 'page_view', 'product_view']);
  });
  await context.close();
});

/** Waits until `predicate(arg)` holds in the page (polled by playwright), failing after `timeout` ms. */
function until(page, what, predicate, arg, timeout = 30_000) {
  return page.waitForFunction(predicate, arg, { timeout, polling: 100 }).catch((error) => {
    throw new Error(`${what}: ${error.message.split('\n')[0]}`);
  });
}

async function signIn(page, userId) {
  await page.getByLabel('User id').fill(userId);
  await page.getByRole('button', { name: 'Sign in (identify)' }).click();
  // Progress read with the user token the shop's server minted.
  await until(page, 'progress shown', () => !document.querySelector('#progress').hidden && document.querySelector('#xp-balance').textContent === '0');
}

test('shop: a purchase its server sends (secret key) → toast, First purchase badge, 62 XP, streak and leaderboard, at 375 px', async () => {
  const userId = `shopper-${randomUUID().slice(0, 8)}`;
  // No key in the address: the shop's server hands out its publishable key and forwards the API.
  const { context, page, log } = await open(`${site.url}/`, { viewport: { width: 375, height: 800 } });
  await signIn(page, userId);
  assert.equal(await page.locator('#badges li.unlocked').count(), 0);

  // 35 + 15 + 70 = 120 EUR: 12 XP for the revenue, 50 for the first purchase.
  for (const sku of ['tee-blue', 'mug-owl', 'cap-red']) await page.click(`article[data-sku="${sku}"] button.add`);
  await until(page, 'cart total', () => document.querySelector('#cart-total').textContent === '120');
  await page.getByRole('button', { name: /^Pay/ }).click();

  // The page long-polls the event's outcomes, shows a toast per award, then reads progress again.
  const toast = page.locator('#toasts .toast', { hasText: 'Badge unlocked: First purchase' });
  await toast.waitFor({ timeout: 30_000 });
  assert.equal(await page.locator('#toasts').getAttribute('role'), 'status');
  await until(page, 'XP balance 62', () => document.querySelector('#xp-balance').textContent === '62');
  await page.locator('#badges li.unlocked', { hasText: 'First purchase' }).waitFor();
  assert.equal(await page.locator('#level').textContent(), 'Bronze');
  assert.equal(await page.locator('#streak').textContent(), '1 day');
  assert.match(await page.locator('#next-level-text').textContent(), /^38 XP to Silver$/);
  await until(
    page,
    'the user on the weekly leaderboard',
    (id) => [...document.querySelectorAll('#leaderboard li.me')].some((li) => li.textContent === `${id} (you): 62 XP`),
    userId,
  );

  // Sent by the server with the secret key, which never reached the browser.
  const [purchase] = (await events(SK(), {}, 2000)).filter((e) => e.userId === userId && e.event === 'purchase');
  assert.equal(purchase.properties.amount, 120);
  assert.equal(purchase.source.keyType, 'secret');
  const everything = JSON.stringify(log.requests) + (await page.content()) + JSON.stringify(await page.evaluate(() => ({ ...localStorage })));
  assert.ok(!everything.includes(SK()), 'the secret key reached the browser');

  // Readable at 375 px: nothing wider than the viewport.
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'horizontal scrolling at 375 px');
  await context.close();
});

test('shop: five product views of a signed-in user (publishable key, awaitOutcome) → Window shopper toast through onReward', async () => {
  const userId = `browser-${randomUUID().slice(0, 8)}`;
  const { context, page } = await open(`${site.url}/`);
  await signIn(page, userId);
  for (let i = 0; i < 5; i++) {
    await page.click(`article[data-sku="${['tee-blue', 'mug-owl', 'cap-red'][i % 3]}"] button.view`);
  }
  await page.locator('#toasts .toast', { hasText: 'Badge unlocked: Window shopper' }).waitFor({ timeout: 30_000 });
  await until(page, 'XP balance 5', () => document.querySelector('#xp-balance').textContent === '5');
  await page.locator('#badges li.unlocked', { hasText: 'Window shopper' }).waitFor();
  await context.close();
});
