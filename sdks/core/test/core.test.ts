import { describe, expect, it } from 'vitest';
import { Gamify, TRUSTED_EVENTS, backoff, parseRetryAfter } from '../src/index';
import { MemoryStorage, PK, SK, harness, settle } from './fakes';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('configuration', () => {
  it('refuses a secret key: it must never reach a browser', () => {
    expect(() => new Gamify({ apiKey: SK }, harness().env)).toThrow(/secret key/);
    expect(() => new Gamify({ apiKey: 'sk_anything' }, harness().env)).toThrow(/secret key/);
  });

  it('refuses a malformed key', () => {
    for (const apiKey of ['', 'pk_live_', `pk_test_${'a'.repeat(64)}`, `pk_live_${'A'.repeat(64)}`, `pk_live_${'a'.repeat(63)}`]) {
      expect(() => new Gamify({ apiKey }, harness().env)).toThrow(/malformed/);
    }
    expect(() => new Gamify({} as unknown as { apiKey: string }, harness().env)).toThrow(/apiKey is required/);
  });

  it('accepts a publishable key and trims the host', () => {
    const g = new Gamify({ apiKey: PK, host: 'https://api.example/' }, harness().env);
    expect(g.host).toBe('https://api.example');
  });
});

describe('identity', () => {
  it('keeps a UUID v4 anonymous id in storage across instances until reset', () => {
    const storage = new MemoryStorage();
    const a = new Gamify({ apiKey: PK }, { ...harness({}, storage).env, uuid: undefined });
    expect(a.anonymousId).toMatch(UUID_V4);
    const b = new Gamify({ apiKey: PK }, { ...harness({}, storage).env, uuid: undefined });
    expect(b.anonymousId).toBe(a.anonymousId);
    b.reset();
    expect(b.anonymousId).toMatch(UUID_V4);
    expect(b.anonymousId).not.toBe(a.anonymousId);
    const c = new Gamify({ apiKey: PK }, { ...harness({}, storage).env, uuid: undefined });
    expect(c.anonymousId).toBe(b.anonymousId);
  });

  it('identify sends /v1/identify and later events carry the user id and the anonymous id', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    g.identify('user_1', { plan: 'pro' });
    await settle();
    g.track('click');
    await settle();
    expect(h.server.sent[0]?.url).toBe('http://localhost:3000/v1/identify');
    expect(h.server.sent[0]?.body).toMatchObject({ userId: 'user_1', traits: { plan: 'pro' } });
    expect(h.server.events()[0]).toMatchObject({ event: 'click', userId: 'user_1', anonymousId: g.anonymousId });
    const again = new Gamify({ apiKey: PK }, { ...h.env });
    expect(again.userId).toBe('user_1');
    again.reset();
    expect(again.userId).toBeUndefined();
  });

  it('generates distinct UUID v4 message ids without an injected generator', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, flushAt: 3 }, { ...h.env, uuid: undefined });
    g.track('a');
    g.track('b');
    g.track('c');
    await settle();
    const ids = h.server.events().map((e) => e.messageId as string);
    expect(ids).toHaveLength(3);
    for (const id of ids) expect(id).toMatch(UUID_V4);
    expect(new Set(ids).size).toBe(3);
  });
});

describe('track', () => {
  it('sends a batch with messageId, timestamp, sentAt, the key header and page context', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, flushAt: 2 }, h.env);
    g.track('page_view', { path: '/products' });
    h.clock.now += 1500;
    g.track('cart_add', { sku: 'tee' });
    await settle();
    expect(h.server.sent).toHaveLength(1);
    const [request] = h.server.sent;
    expect(request?.url).toBe('http://localhost:3000/v1/events/batch');
    expect(request?.init.headers).toMatchObject({ 'Content-Type': 'application/json', 'x-api-key': PK });
    expect(request?.body.sentAt).toBe('2026-01-01T00:00:01.500Z');
    const [first, second] = h.server.events();
    expect(first).toMatchObject({
      event: 'page_view',
      anonymousId: g.anonymousId,
      messageId: '00000000-0000-4000-8000-000000000002',
      timestamp: '2026-01-01T00:00:00.000Z',
      properties: { path: '/products' },
      context: { page: { path: '/products', url: 'https://shop.example/products' }, library: { name: '@gamify/core' } },
    });
    expect(second).toMatchObject({ event: 'cart_add', timestamp: '2026-01-01T00:00:01.500Z' });
    expect(g.queued).toBe(0);
  });

  it('does not send trusted events and warns that a server must', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    for (const event of TRUSTED_EVENTS) g.track(event, { orderId: 'o-1' });
    await h.clock.advance(60_000);
    expect(h.server.sent).toHaveLength(0);
    expect(g.queued).toBe(0);
    expect(h.warnings).toHaveLength(TRUSTED_EVENTS.length);
    expect(h.warnings[0]).toMatch(/"purchase" is a trusted event.*secret key/);
  });

  it('sends after flushInterval when flushAt is not reached', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, flushAt: 10, flushInterval: 5000 }, h.env);
    g.track('click');
    await h.clock.advance(4999);
    expect(h.server.sent).toHaveLength(0);
    await h.clock.advance(1);
    expect(h.server.events()).toHaveLength(1);
    expect(g.queued).toBe(0);
  });

  it('flush() sends at once', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK }, h.env);
    g.track('click');
    await g.flush();
    expect(h.server.events()).toHaveLength(1);
  });

  it('drops an event over 32 KB with a debug log', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, debug: true }, h.env);
    g.track('search', { q: 'x'.repeat(40_000) });
    expect(g.queued).toBe(0);
    expect(h.debugs.join('\n')).toMatch(/larger than 32 KB/);
  });
});

describe('delivery', () => {
  it('retries 503 no sooner than Retry-After', async () => {
    const h = harness();
    h.server.replies.push({ status: 503, headers: { 'Retry-After': '7' }, body: { error: { code: 'unavailable' } } });
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    g.track('click');
    await settle();
    expect(h.server.sent).toHaveLength(1);
    await h.clock.advance(6999);
    expect(h.server.sent).toHaveLength(1);
    await h.clock.advance(1);
    expect(h.server.sent).toHaveLength(2);
    expect(h.server.sent[1]?.body.batch).toEqual(h.server.sent[0]?.body.batch);
    expect(g.queued).toBe(0);
  });

  it('retries network errors, 5xx, 408 and 429 with exponential backoff and full jitter', async () => {
    const h = harness();
    h.server.replies.push('network-error', { status: 500 }, { status: 408 }, { status: 429 }, { status: 502 });
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    g.track('click');
    await settle();
    // random() = 0.5: half of 1 s, 2 s, 4 s, 8 s, 16 s
    for (const delay of [500, 1000, 2000, 4000, 8000]) {
      const before = h.server.sent.length;
      expect(h.clock.pending()).toEqual([delay]);
      await h.clock.advance(delay);
      expect(h.server.sent.length).toBe(before + 1);
    }
    expect(g.queued).toBe(0);
    // every retry carries the same message id and a fresh sentAt
    const ids = new Set(h.server.sent.map((s) => (s.body.batch as Array<{ messageId: string }>)[0]?.messageId));
    expect(ids.size).toBe(1);
    expect(h.server.sent[0]?.body.sentAt).not.toBe(h.server.sent[5]?.body.sentAt);
  });

  it('backoff is full jitter under an exponential cap', () => {
    expect(backoff(0, () => 0)).toBe(0);
    expect(backoff(3, () => 0.999_999)).toBe(7999);
    expect(backoff(30, () => 0.999_999)).toBeLessThanOrEqual(60_000);
    expect(parseRetryAfter('3', 0)).toBe(3000);
    expect(parseRetryAfter(null, 0)).toBe(0);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4000)).toBe(6000);
    expect(parseRetryAfter('soon', 0)).toBe(0);
  });

  it('drops other 4xx with a debug log and goes on', async () => {
    const h = harness();
    h.server.replies.push({ status: 401, body: { error: { code: 'invalid_api_key', message: 'invalid api key' } } });
    const g = new Gamify({ apiKey: PK, flushAt: 1, debug: true }, h.env);
    g.track('click');
    await settle();
    expect(g.queued).toBe(0);
    expect(h.debugs.join('\n')).toMatch(/dropped 1 call\(s\): 401 .*invalid_api_key/);
    await h.clock.advance(120_000);
    expect(h.server.sent).toHaveLength(1);
  });

  it('drops only the items a batch verdict names and resends the rest', async () => {
    const h = harness();
    h.server.replies.push({ status: 400, body: { error: { code: 'invalid_request', message: 'x', details: { indexes: [1] } } } });
    const g = new Gamify({ apiKey: PK, flushAt: 3 }, h.env);
    g.track('a');
    g.track('b');
    g.track('c');
    await settle();
    expect(h.server.sent).toHaveLength(2);
    expect((h.server.sent[1]?.body.batch as Array<{ event: string }>).map((e) => e.event)).toEqual(['a', 'c']);
    expect(g.queued).toBe(0);
  });

  it('keeps the unsent queue in storage across reloads and delivers it when the gateway is back', async () => {
    const storage = new MemoryStorage();
    const first = harness({}, storage);
    first.server.replies.push('network-error');
    const before = new Gamify({ apiKey: PK, flushAt: 2 }, first.env);
    before.track('page_view');
    before.track('cart_add');
    await settle();
    expect(before.queued).toBe(2);
    before.close();

    const second = harness({}, storage);
    const after = new Gamify({ apiKey: PK, flushAt: 2 }, second.env);
    expect(after.queued).toBe(2);
    await second.clock.advance(0);
    expect(second.server.events().map((e) => e.event)).toEqual(['page_view', 'cart_add']);
    expect(second.server.events()[0]?.messageId).toBe(first.server.events()[0]?.messageId);
    expect(after.queued).toBe(0);
    expect(JSON.parse(storage.getItem([...storage.data.keys()].find((k) => k.endsWith(':queue')) as string) ?? '')).toEqual([]);
  });

  it('bounds the queue by maxQueueSize, dropping the oldest with a debug log', async () => {
    const h = harness({ fetch: undefined });
    const g = new Gamify({ apiKey: PK, maxQueueSize: 3, flushAt: 100, debug: true }, { ...h.env, fetch: () => new Promise(() => undefined) });
    for (const event of ['e1', 'e2', 'e3', 'e4', 'e5']) g.track(event);
    expect(g.queued).toBe(3);
    expect(h.debugs.filter((d) => d.includes('queue full'))).toHaveLength(2);
    const stored = JSON.parse(h.storage.getItem([...h.storage.data.keys()].find((k) => k.endsWith(':queue')) as string) ?? '');
    expect(stored.map((c: { b: { event: string } }) => c.b.event)).toEqual(['e3', 'e4', 'e5']);
  });

  it('sends again when the browser comes back online', async () => {
    const h = harness();
    h.server.replies.push('network-error');
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    g.track('click');
    await settle();
    expect(g.queued).toBe(1);
    h.window.dispatch('online');
    await settle();
    expect(g.queued).toBe(0);
  });
});

describe('unload', () => {
  it('on pagehide hands the queue to sendBeacon as text/plain JSON with the key in the body', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK }, h.env);
    g.track('page_view');
    g.identify('user_9');
    g.track('cart_add');
    h.window.dispatch('pagehide');
    expect(h.beacons.map((b) => b.url)).toEqual([
      'http://localhost:3000/v1/events/batch',
      'http://localhost:3000/v1/identify',
      'http://localhost:3000/v1/events/batch',
    ]);
    const first = JSON.parse(h.beacons[0]?.data ?? '{}');
    expect(first.apiKey).toBe(PK);
    expect(first.sentAt).toBe('2026-01-01T00:00:00.000Z');
    expect(first.batch.map((e: { event: string }) => e.event)).toEqual(['page_view']);
    expect(JSON.parse(h.beacons[1]?.data ?? '{}')).toMatchObject({ apiKey: PK, userId: 'user_9' });
    expect(g.queued).toBe(0);
    await h.clock.advance(60_000);
    expect(h.server.sent).toHaveLength(0);
  });

  it('keeps beaconed calls for the next page while deliveries are failing', async () => {
    const storage = new MemoryStorage();
    const h = harness({}, storage);
    h.server.replies.push('network-error');
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    g.track('cart_add');
    await settle();
    h.window.dispatch('pagehide');
    expect(h.beacons).toHaveLength(1);
    expect(g.queued).toBe(1);
    const next = harness({}, storage);
    const again = new Gamify({ apiKey: PK }, next.env);
    await next.clock.advance(0);
    expect(next.server.events().map((e) => e.messageId)).toEqual(
      (JSON.parse(h.beacons[0]?.data ?? '{}').batch as Array<{ messageId: string }>).map((e) => e.messageId),
    );
    expect(again.queued).toBe(0);
  });

  it('on visibilitychange to hidden, not to visible', () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK }, h.env);
    g.track('click');
    h.document.dispatch('visibilitychange');
    expect(h.beacons).toHaveLength(0);
    h.document.visibilityState = 'hidden';
    h.document.dispatch('visibilitychange');
    expect(h.beacons).toHaveLength(1);
  });

  it('stays within the 64 KB keepalive budget and keeps the rest for the next page', () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, flushAt: 1000, maxQueueSize: 1000 }, h.env);
    for (let i = 0; i < 200; i++) g.track('search', { q: 'x'.repeat(1000), i });
    h.window.dispatch('pagehide');
    const total = h.beacons.reduce((n, b) => n + b.data.length, 0);
    expect(total).toBeLessThanOrEqual(64_000);
    const sent = h.beacons.flatMap((b) => JSON.parse(b.data).batch as unknown[]).length;
    expect(sent).toBeGreaterThan(40); // ~1.3 KB each: the budget is used, not wasted
    expect(g.queued).toBe(200 - sent);
  });

  it('falls back to fetch keepalive with text/plain when the beacon is refused', async () => {
    const h = harness({ sendBeacon: () => false });
    const g = new Gamify({ apiKey: PK }, h.env);
    g.track('click');
    h.window.dispatch('pagehide');
    expect(h.server.sent).toHaveLength(1);
    const [request] = h.server.sent;
    expect(request?.init).toMatchObject({ keepalive: true, headers: { 'Content-Type': 'text/plain' } });
    expect(request?.init.headers['x-api-key']).toBeUndefined();
    expect(request?.body.apiKey).toBe(PK);
    await settle();
    expect(g.queued).toBe(0);
  });
});
