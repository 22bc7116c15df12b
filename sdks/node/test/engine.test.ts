import { describe, expect, it } from 'vitest';
import {
  GamifyApiError,
  GamifyValidationError,
  type Leaderboard,
  type LedgerPage,
  type Outcomes,
  type PointsAdjustment,
  type Progress,
  type RuleVersion,
} from '../src/index';
import { Fake, SK, client, settle } from './fakes';

const HOST = 'http://localhost:3000';
const ADMIN = 'adm_0123456789';
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function failure<E extends Error>(promise: Promise<unknown>, type: new (...args: never[]) => E): Promise<E> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(type);
  return error as E;
}

describe('reads with the secret key', () => {
  it('progress: GET with x-api-key, the user id encoded, no body', async () => {
    const fake = new Fake();
    const progress: Progress = {
      userId: 'user/1',
      metrics: { lessons: 3 },
      achievements: [{ key: 'first', name: 'First', unlockedAt: '2026-03-01T00:00:00Z', eventId: 'e1' }],
      streaks: { daily: { length: 2, longest: 4, periodStart: '2026-03-01T00:00:00Z', freezesLeft: 0, extendedToday: false } },
      points: { xp: { balance: 40, level: null } },
      leaderboards: { weekly: { rank: 7, score: 40, period: { start: '2026-02-23T00:00:00Z', end: '2026-03-02T00:00:00Z' } } },
    };
    fake.replies.push({ status: 200, body: progress });
    expect(await client(fake).progress('user/1')).toEqual(progress);
    const [request] = fake.sent;
    expect(request?.url).toBe(`${HOST}/v1/users/user%2F1/progress`);
    expect(request?.init.method).toBe('GET');
    expect(request?.init.body).toBeUndefined();
    expect(request?.init.headers).toEqual({ 'x-api-key': SK, 'User-Agent': 'gamify-node/0.1.0' });
  });

  it('leaderboard and ledger: the options as query parameters', async () => {
    const fake = new Fake();
    const board: Leaderboard = {
      key: 'weekly xp',
      period: { start: 's', end: 'e' },
      entries: [{ rank: 1, userId: 'u1', score: 9 }],
      nextCursor: null,
    };
    const ledger: LedgerPage = { data: [{ id: 'l1', amount: -5, reason: 'refund', eventId: null, createdAt: 't' }], nextCursor: 'n' };
    for (const body of [board, board, board, ledger, ledger]) fake.replies.push({ status: 200, body });
    const gamify = client(fake);
    expect(await gamify.leaderboard('weekly xp')).toEqual(board);
    await gamify.leaderboard('weekly xp', { period: 'previous', limit: 10, cursor: 'a&b' });
    await gamify.leaderboard('weekly xp', { period: new Date('2026-02-23T00:00:00Z') });
    expect(await gamify.ledger('u1', 'xp')).toEqual(ledger);
    await gamify.ledger('u1', 'xp', { cursor: 'n' });
    expect(fake.sent.map((s) => s.url.slice(HOST.length))).toEqual([
      '/v1/leaderboards/weekly%20xp',
      '/v1/leaderboards/weekly%20xp?period=previous&limit=10&cursor=a%26b',
      '/v1/leaderboards/weekly%20xp?period=2026-02-23T00%3A00%3A00.000Z',
      '/v1/users/u1/points/xp/ledger',
      '/v1/users/u1/points/xp/ledger?cursor=n',
    ]);
  });

  it('outcomes: wait within 0–10, and the request timeout grows by the wait', async () => {
    const fake = new Fake();
    const outcomes: Outcomes = {
      eventId: 'e1',
      status: 'evaluated',
      awards: [{ type: 'level', key: 'xp', level: 'silver', previous: 'bronze' }],
    };
    fake.replies.push({ status: 200, body: outcomes });
    const gamify = client(fake, { timeout: 2_000, maxRetries: 0 });
    expect(await gamify.outcomes('e1')).toEqual(outcomes);
    expect(fake.sent[0]?.url).toBe(`${HOST}/v1/events/e1/outcomes`);

    fake.replies.push('hang');
    const waiting = failure(gamify.outcomes('e1', { wait: 10 }), GamifyApiError);
    await settle();
    expect(fake.sent[1]?.url).toBe(`${HOST}/v1/events/e1/outcomes?wait=10`);
    expect(fake.pending()).toEqual([12_000]);
    await fake.advance(12_000);
    expect((await waiting).code).toBe('timeout');

    await failure(gamify.outcomes('e1', { wait: 11 }), GamifyValidationError);
    await failure(gamify.outcomes('e1', { wait: 1.5 }), GamifyValidationError);
    await failure(gamify.outcomes(''), GamifyValidationError);
    expect(fake.sent).toHaveLength(2);
  });
});

describe('errors and retries', () => {
  it('an error answer is a GamifyApiError with status, code and details, not retried when a 4xx', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 404, body: { error: { code: 'not_found', message: 'no such user', details: { userId: 'u9' } } } });
    const error = await failure(client(fake).progress('u9'), GamifyApiError);
    expect([error.status, error.code, error.details]).toEqual([404, 'not_found', { userId: 'u9' }]);
    expect(error.message).toBe('Gamify: GET /v1/users/u9/progress: 404 not_found: no such user');
    expect(fake.sent).toHaveLength(1);
  });

  it('retries network errors, 5xx and 429 with backoff, never sooner than Retry-After, up to maxRetries', async () => {
    const fake = new Fake();
    fake.replies.push('network-error', { status: 429, headers: { 'Retry-After': '5' } }, { status: 500 }, { status: 502 });
    const result = failure(client(fake, { maxRetries: 3 }).progress('u1'), GamifyApiError);
    await settle();
    expect(fake.sent).toHaveLength(1);
    await fake.advance(250); // backoff(0) = 250 ms
    expect(fake.sent).toHaveLength(2);
    await fake.advance(4_999);
    expect(fake.sent).toHaveLength(2);
    await fake.advance(1);
    expect(fake.sent).toHaveLength(3);
    await fake.advance(1_000);
    expect(fake.sent).toHaveLength(4);
    const error = await result;
    expect([error.status, error.code]).toEqual([502, 'http_502']);
  });

  it('a 2xx that is not JSON is an invalid_response', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 200, raw: '<html>' });
    expect((await failure(client(fake).progress('u1'), GamifyApiError)).code).toBe('invalid_response');
  });
});

describe('user tokens', () => {
  it('POST /v1/users/{userId}/tokens with {} or {ttlSeconds}', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 201, body: { token: 'ut_a', expiresAt: 't1' } }, { status: 201, body: { token: 'ut_b', expiresAt: 't2' } });
    const gamify = client(fake);
    expect(await gamify.userToken('u1')).toEqual({ token: 'ut_a', expiresAt: 't1' });
    expect(await gamify.userToken('u1', { ttlSeconds: 600 })).toEqual({ token: 'ut_b', expiresAt: 't2' });
    expect(fake.sent.map((s) => [s.init.method, s.url, s.init.body])).toEqual([
      ['POST', `${HOST}/v1/users/u1/tokens`, '{}'],
      ['POST', `${HOST}/v1/users/u1/tokens`, '{"ttlSeconds":600}'],
    ]);
    expect(fake.sent[0]?.init.headers).toMatchObject({ 'x-api-key': SK, 'Content-Type': 'application/json' });
    await failure(gamify.userToken('u1', { ttlSeconds: 0 }), GamifyValidationError);
  });
});

describe('adjustPoints', () => {
  const adjustment: PointsAdjustment = { id: 'l1', amount: 50, reason: 'support gesture', balance: 150, createdAt: 't' };

  it('sends one Idempotency-Key (a UUID v4) on every retry of a call, a new one per call', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 503 }, 'network-error', { status: 201, body: adjustment }, { status: 201, body: adjustment });
    const gamify = client(fake);
    const first = gamify.adjustPoints('u1', 'xp', { amount: 50, reason: 'support gesture' });
    await fake.advance(60_000);
    expect(await first).toEqual(adjustment);
    await gamify.adjustPoints('u1', 'xp', { amount: 50, reason: 'support gesture' });
    const keys = fake.sent.map((s) => s.init.headers['Idempotency-Key']);
    expect(keys).toHaveLength(4);
    expect(keys[0]).toMatch(UUID_V4);
    expect(new Set(keys.slice(0, 3)).size).toBe(1);
    expect(keys[3]).not.toBe(keys[0]);
    expect(fake.sent[0]?.url).toBe(`${HOST}/v1/users/u1/points/xp/adjustments`);
    expect(fake.sent[0]?.body).toEqual({ amount: 50, reason: 'support gesture' });
  });

  it('uses the caller\'s idempotency key as it is, and validates first', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 201, body: adjustment });
    const gamify = client(fake);
    await gamify.adjustPoints('u1', 'xp', { amount: -5, reason: 'refund', idempotencyKey: 'refund:o-1' });
    expect(fake.sent[0]?.init.headers['Idempotency-Key']).toBe('refund:o-1');
    for (const params of [
      { amount: 1.5, reason: 'x' },
      { amount: 0, reason: 'x' },
      { amount: 1, reason: ' ' },
      { amount: 1, reason: 'x', idempotencyKey: '' },
    ]) {
      await failure(gamify.adjustPoints('u1', 'xp', params), GamifyValidationError);
    }
    await failure(gamify.adjustPoints('u1', '', { amount: 1, reason: 'x' }), GamifyValidationError);
    expect(fake.sent).toHaveLength(1);
  });
});

describe('rules (management token)', () => {
  const rules = { achievements: [{ key: 'first-lesson', when: { event: 'lesson_completed' } }] };

  it('need the managementToken option', async () => {
    const fake = new Fake();
    const error = await failure(client(fake).rules.get('p1'), GamifyValidationError);
    expect(error.message).toMatch(/managementToken/);
    expect(fake.sent).toHaveLength(0);
  });

  it('publish PUTs {rules, apply} with the management token, and is not retried', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 201, body: { version: 3, createdAt: 't', apply: 'replay' } }, { status: 503 });
    const gamify = client(fake, { managementToken: ADMIN });
    expect(await gamify.rules.publish('p1', rules, { apply: 'replay' })).toEqual({ version: 3, createdAt: 't', apply: 'replay' });
    const [request] = fake.sent;
    expect([request?.init.method, request?.url]).toEqual(['PUT', `${HOST}/v1/projects/p1/rules`]);
    expect(request?.init.headers).toMatchObject({ Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' });
    expect(request?.init.headers['x-api-key']).toBeUndefined();
    expect(request?.body).toEqual({ rules, apply: 'replay' });

    const error = await failure(gamify.rules.publish('p1', rules, { apply: 'from_now' }), GamifyApiError);
    expect(error.status).toBe(503);
    expect(fake.sent).toHaveLength(2);
    await failure(gamify.rules.publish('p1', rules, { apply: 'later' as 'replay' }), GamifyValidationError);
    await failure(gamify.rules.publish('p1', 'rules' as unknown as typeof rules, { apply: 'replay' }), GamifyValidationError);
    expect(fake.sent).toHaveLength(2);
  });

  it('get and version read with the management token', async () => {
    const fake = new Fake();
    const version: RuleVersion = {
      version: 3,
      apply: 'replay',
      state: 'replaying',
      progress: { eventsDone: 10, eventsTotal: 40 },
      createdAt: 't',
      activatedAt: null,
    };
    fake.replies.push(
      { status: 200, body: { version: 2, rules, apply: 'from_now', state: 'active', createdAt: 't', activatedAt: 't' } },
      { status: 200, body: version },
    );
    const gamify = client(fake, { managementToken: ADMIN });
    expect((await gamify.rules.get('p 1')).rules).toEqual(rules);
    expect(await gamify.rules.version('p 1', 3)).toEqual(version);
    expect(fake.sent.map((s) => s.url)).toEqual([`${HOST}/v1/projects/p%201/rules`, `${HOST}/v1/projects/p%201/rules/versions/3`]);
    expect(fake.sent.every((s) => s.init.headers.Authorization === `Bearer ${ADMIN}`)).toBe(true);
    await failure(gamify.rules.version('p1', 0), GamifyValidationError);
  });
});
