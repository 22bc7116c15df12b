import { describe, expect, it } from 'vitest';
import { Gamify, GamifyError, type Award, type FetchLike, type Outcomes, type Reward } from '../src/index';
import { MemoryStorage, PK, harness, settle, type Reply } from './fakes';

const HOST = 'http://localhost:3000';
const outcomesUrl = (eventId: string, wait = 10): string => `${HOST}/v1/events/${eventId}/outcomes?wait=${wait}`;

const POINTS: Award = { type: 'points', key: 'xp', amount: 10, balance: 110, reason: 'lesson' };
const BADGE: Award = { type: 'achievement', key: 'first-lesson', name: 'First lesson', unlockedAt: '2026-01-01T00:00:01Z' };

function evaluated(eventId: string, awards: Award[]): Reply {
  const body: Outcomes = { eventId, status: 'evaluated', awards };
  return { status: 200, body };
}

function pending(eventId: string): Reply {
  const body: Outcomes = { eventId, status: 'pending', awards: [] };
  return { status: 200, body };
}

type Answer = Reply | 'network-error';

/** Replies in order, the last one repeated. */
function sequence(...replies: Answer[]): () => Answer {
  return () => (replies.length > 1 ? (replies.shift() as Answer) : (replies[0] as Answer));
}

async function rejection(promise: Promise<unknown>): Promise<GamifyError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(GamifyError);
  return error as GamifyError;
}

describe('track resolves with the event id', () => {
  it('once the gateway acknowledged the batch, each with its own id in the batch order', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK }, h.env);
    const a = g.track('page_view');
    g.identify('user_1');
    const b = g.track('click');
    const c = g.track('search', { q: 'tee' });
    let settled = false;
    void a.then(() => (settled = true));
    await settle();
    expect(settled).toBe(false); // queued, not sent yet
    await g.flush();
    // page_view alone, the identify (evt-2), then the two calls after it
    expect(h.server.sent.map((s) => s.url)).toEqual([`${HOST}/v1/events/batch`, `${HOST}/v1/identify`, `${HOST}/v1/events/batch`]);
    expect(await Promise.all([a, b, c])).toEqual(['evt-1', 'evt-3', 'evt-4']);
  });

  it('after retries, with the id of the delivery that was acknowledged', async () => {
    const h = harness();
    h.server.replies.push('network-error', { status: 503 }, { status: 202, body: { accepted: 1, ids: ['0190-event'] } });
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    const id = g.track('click');
    await settle();
    await h.clock.advance(60_000);
    expect(h.server.sent).toHaveLength(3);
    expect(await id).toBe('0190-event');
  });

  it('rejects, never unhandled, when the event is not sent: trusted, unnamed, too large, refused, dropped', async () => {
    const h = harness();
    h.server.replies.push({ status: 400, body: { error: { code: 'invalid_request', message: 'bad', details: { indexes: [0] } } } });
    const g = new Gamify({ apiKey: PK, flushAt: 2, maxQueueSize: 10 }, h.env);
    expect((await rejection(g.track('purchase'))).code).toBe('trusted_event');
    expect((await rejection(g.track(''))).code).toBe('invalid_event');
    expect((await rejection(g.track('search', { q: 'x'.repeat(40_000) }))).code).toBe('payload_too_large');
    const refused = g.track('bad');
    const fine = g.track('good');
    const error = await rejection(refused);
    expect([error.code, error.status, error.details]).toEqual(['invalid_request', 400, { indexes: [0] }]);
    expect(await fine).toMatch(/^evt-/);

    h.server.replies.push({ status: 401, body: { error: { code: 'invalid_api_key', message: 'invalid api key' } } });
    const unauthorized = g.track('x');
    await g.flush();
    expect((await rejection(unauthorized)).code).toBe('invalid_api_key');
    // calls never awaited reject silently: vitest fails the run on an unhandled rejection
    g.track('checkout_complete');
  });

  it('rejects the oldest call when the queue overflows', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, flushAt: 100, maxQueueSize: 1 }, { ...h.env, fetch: () => new Promise(() => undefined) });
    const first = g.track('a');
    g.track('b');
    expect((await rejection(first)).code).toBe('queue_full');
  });

  it('keeps offline persistence: after a reload the event is still sent, the old promise is simply gone', async () => {
    const storage = new MemoryStorage();
    const first = harness({}, storage);
    first.server.replies.push('network-error');
    const before = new Gamify({ apiKey: PK, flushAt: 1 }, first.env);
    let outcome: unknown = 'unsettled';
    before.track('cart_add').then(
      (id) => (outcome = id),
      (e: unknown) => (outcome = e),
    );
    await settle();
    before.close();
    expect(before.queued).toBe(1);
    // the queue as stored holds calls only: nothing about promises
    const stored = JSON.parse(storage.getItem([...storage.data.keys()].find((k) => k.endsWith(':queue')) as string) ?? '');
    expect(Object.keys(stored[0]).sort()).toEqual(['b', 't']);

    const second = harness({}, storage);
    const after = new Gamify({ apiKey: PK }, second.env);
    await second.clock.advance(0);
    expect(second.server.events().map((e) => e.event)).toEqual(['cart_add']);
    expect(after.queued).toBe(0);
    expect(outcome).toBe('unsettled');
  });

  it('a beacon at page hide has no answer to read: its promises reject as unacknowledged', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK }, h.env);
    const id = g.track('page_view');
    h.document.visibilityState = 'hidden';
    h.document.dispatch('visibilitychange');
    expect(h.beacons).toHaveLength(1);
    expect((await rejection(id)).code).toBe('unacknowledged');
  });

  it('a beacon does not reject what the request in flight acknowledges', async () => {
    const h = harness();
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const fetch: FetchLike = async (url, init) => {
      await held;
      return h.server.fetch(url, init);
    };
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, { ...h.env, fetch });
    const id = g.track('click');
    await settle();
    h.window.dispatch('pagehide');
    expect(h.beacons).toHaveLength(1);
    release();
    expect(await id).toBe('evt-1');
  });

  it('the keepalive fallback reads the answer: its promises resolve with the ids', async () => {
    const h = harness({ sendBeacon: () => false });
    const g = new Gamify({ apiKey: PK }, h.env);
    const id = g.track('click');
    h.window.dispatch('pagehide');
    await settle();
    expect(h.server.sent[0]?.init.keepalive).toBe(true);
    expect(await id).toBe('evt-1');
  });
});

describe('awaitOutcome and onReward', () => {
  it('sends at once, long-polls the outcomes with the publishable key and hands the awards to every callback', async () => {
    const h = harness();
    h.server.reads.set(outcomesUrl('evt-1'), evaluated('evt-1', [POINTS, BADGE]));
    const g = new Gamify({ apiKey: PK, flushAt: 10 }, h.env);
    const rewards: Reward[] = [];
    const others: Reward[] = [];
    g.onReward((r) => rewards.push(r));
    g.onReward((r) => others.push(r));
    expect(await g.track('lesson_completed', { lesson: 3 }, { awaitOutcome: true })).toBe('evt-1');
    await settle();
    expect(h.server.sent.map((s) => [s.init.method, s.url])).toEqual([
      ['POST', `${HOST}/v1/events/batch`],
      ['GET', outcomesUrl('evt-1')],
    ]);
    expect(h.server.gets()[0]?.init.headers).toEqual({ 'x-api-key': PK });
    expect(h.server.gets()[0]?.init.body).toBeUndefined();
    expect(rewards).toEqual([{ eventId: 'evt-1', awards: [POINTS, BADGE] }]);
    expect(others).toEqual(rewards);
  });

  it('polls again while pending, a bounded number of times', async () => {
    const h = harness();
    h.server.reads.set(outcomesUrl('evt-1'), sequence(pending('evt-1'), pending('evt-1'), evaluated('evt-1', [POINTS])));
    h.server.reads.set(outcomesUrl('evt-2'), pending('evt-2'));
    const g = new Gamify({ apiKey: PK }, h.env);
    const rewards: Reward[] = [];
    g.onReward((r) => rewards.push(r));
    await g.track('a', undefined, { awaitOutcome: true });
    await settle();
    expect(h.server.gets()).toHaveLength(3);
    expect(rewards).toEqual([{ eventId: 'evt-1', awards: [POINTS] }]);

    await g.track('b', undefined, { awaitOutcome: true });
    await h.clock.advance(600_000);
    expect(h.server.gets().filter((s) => s.url === outcomesUrl('evt-2'))).toHaveLength(4);
    expect(rewards).toHaveLength(1);
  });

  it('retries an event not stored yet (404) and failures after a backoff; stops on other errors', async () => {
    const h = harness();
    h.server.reads.set(
      outcomesUrl('evt-1'),
      sequence(
        { status: 404, body: { error: { code: 'not_found', message: 'x' } } },
        'network-error',
        evaluated('evt-1', [BADGE]),
      ),
    );
    h.server.reads.set(outcomesUrl('evt-2'), { status: 401, body: { error: { code: 'invalid_api_key', message: 'x' } } });
    const g = new Gamify({ apiKey: PK }, h.env);
    const rewards: Reward[] = [];
    g.onReward((r) => rewards.push(r));
    await g.track('a', undefined, { awaitOutcome: true });
    await settle();
    expect(h.server.gets()).toHaveLength(1);
    expect(h.clock.pending()).toEqual([1000]); // backoff(1) with random 0.5
    await h.clock.advance(1000);
    expect(h.server.gets()).toHaveLength(2);
    await h.clock.advance(2000);
    expect(h.server.gets()).toHaveLength(3);
    expect(rewards).toEqual([{ eventId: 'evt-1', awards: [BADGE] }]);

    await g.track('b', undefined, { awaitOutcome: true });
    await h.clock.advance(600_000);
    expect(h.server.gets().filter((s) => s.url === outcomesUrl('evt-2'))).toHaveLength(1);
  });

  it('calls nothing for no awards or not_counted, nor for events tracked without awaitOutcome', async () => {
    const h = harness();
    h.server.reads.set(outcomesUrl('evt-1'), evaluated('evt-1', []));
    h.server.reads.set(outcomesUrl('evt-2'), { status: 200, body: { eventId: 'evt-2', status: 'not_counted', awards: [] } });
    const g = new Gamify({ apiKey: PK, flushAt: 1 }, h.env);
    const rewards: Reward[] = [];
    g.onReward((r) => rewards.push(r));
    await g.track('a', undefined, { awaitOutcome: true });
    await g.track('b', undefined, { awaitOutcome: true });
    await g.track('c');
    await h.clock.advance(60_000);
    expect(h.server.gets().map((s) => s.url)).toEqual([outcomesUrl('evt-1'), outcomesUrl('evt-2')]);
    expect(rewards).toEqual([]);
  });

  it('unsubscribes, and a throwing callback does not stop the others', async () => {
    const h = harness();
    h.server.reads.set(outcomesUrl('evt-1'), evaluated('evt-1', [POINTS]));
    h.server.reads.set(outcomesUrl('evt-2'), evaluated('evt-2', [POINTS]));
    const g = new Gamify({ apiKey: PK }, h.env);
    const seen: string[] = [];
    g.onReward(() => {
      throw new Error('boom');
    });
    const off = g.onReward((r) => seen.push(r.eventId));
    await g.track('a', undefined, { awaitOutcome: true });
    await settle();
    off();
    off();
    await g.track('b', undefined, { awaitOutcome: true });
    await settle();
    expect(seen).toEqual(['evt-1']);
    expect(h.warnings.filter((w) => /onReward callback threw/.test(w))).toHaveLength(2);
  });
});

describe('reads', () => {
  it('outcomes(): the publishable key, the id encoded, wait within 0–10, errors as GamifyError', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK }, h.env);
    h.server.reads.set(`${HOST}/v1/events/e%2F1/outcomes`, evaluated('e/1', [POINTS]));
    expect(await g.outcomes('e/1')).toEqual({ eventId: 'e/1', status: 'evaluated', awards: [POINTS] });
    h.server.reads.set(outcomesUrl('e', 10), pending('e'));
    h.server.reads.set(outcomesUrl('e', 0), pending('e'));
    await g.outcomes('e', { wait: 30 });
    await g.outcomes('e', { wait: -1 });
    expect(h.server.gets().map((s) => s.url.split('?')[1])).toEqual([undefined, 'wait=10', 'wait=0']);
    const missing = await rejection(g.outcomes('nope'));
    expect([missing.code, missing.status, missing.message]).toEqual(['not_found', 404, 'Gamify: 404 not found']);
    h.server.reads.set(outcomesUrl('down', 1), 'network-error');
    expect((await rejection(g.outcomes('down', { wait: 1 }))).code).toBe('network_error');
  });

  it('progress() and leaderboard() need a user token and send it as a bearer token, not the key', async () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK }, h.env);
    expect((await rejection(g.progress('user_1'))).code).toBe('user_token_required');
    expect((await rejection(g.leaderboard('weekly'))).code).toBe('user_token_required');
    expect(h.server.sent).toHaveLength(0);

    g.setUserToken('ut_abc');
    expect((await rejection(g.progress())).code).toBe('user_required');
    g.identify('user 1');
    const progress = {
      userId: 'user 1',
      metrics: { lessons: 3 },
      achievements: [{ key: 'first-lesson', name: 'First lesson', unlockedAt: '2026-01-01T00:00:00Z', eventId: 'evt-1' }],
      streaks: { daily: { length: 2, longest: 5, periodStart: '2026-01-01T00:00:00Z', freezesLeft: 1, extendedToday: true } },
      points: { xp: { balance: 110, level: 'bronze' } },
      leaderboards: { weekly: { rank: 3, score: 110, period: { start: '2025-12-29T00:00:00Z', end: '2026-01-05T00:00:00Z' } } },
    };
    h.server.reads.set(`${HOST}/v1/users/user%201/progress`, { status: 200, body: progress });
    expect(await g.progress()).toEqual(progress);
    const read = h.server.gets()[0];
    expect(read?.init.headers).toEqual({ Authorization: 'Bearer ut_abc' });

    const board = { key: 'weekly', period: { start: 's', end: 'e' }, entries: [{ rank: 1, userId: 'u', score: 1 }], nextCursor: null };
    h.server.reads.set(`${HOST}/v1/leaderboards/weekly`, { status: 200, body: board });
    h.server.reads.set(`${HOST}/v1/leaderboards/weekly?period=previous&limit=5&cursor=c%3D1`, { status: 200, body: board });
    h.server.reads.set(`${HOST}/v1/leaderboards/weekly?period=2026-01-05T00%3A00%3A00.000Z`, { status: 200, body: board });
    expect(await g.leaderboard('weekly')).toEqual(board);
    expect(await g.leaderboard('weekly', { period: 'previous', limit: 5, cursor: 'c=1' })).toEqual(board);
    expect(await g.leaderboard('weekly', { period: new Date('2026-01-05T00:00:00Z') })).toEqual(board);

    const notYours = { status: 403, body: { error: { code: 'forbidden', message: 'not your user' } } };
    h.server.reads.set(`${HOST}/v1/users/other/progress`, notYours);
    const forbidden = await rejection(g.progress('other'));
    expect([forbidden.code, forbidden.status]).toEqual(['forbidden', 403]);
  });

  it('the user token: from the options, replaced, forgotten by reset(); never a secret key', () => {
    const h = harness();
    const g = new Gamify({ apiKey: PK, userToken: 'ut_1' }, h.env);
    expect(g.userToken).toBe('ut_1');
    g.setUserToken('ut_2');
    expect(g.userToken).toBe('ut_2');
    g.reset();
    expect(g.userToken).toBeUndefined();
    g.setUserToken('ut_3');
    g.setUserToken(null);
    expect(g.userToken).toBeUndefined();
    expect(() => g.setUserToken(`sk_live_${'ab'.repeat(32)}`)).toThrow(/secret key/);
    expect(() => new Gamify({ apiKey: PK, userToken: `sk_live_${'ab'.repeat(32)}` }, h.env)).toThrow(/secret key/);
  });
});
