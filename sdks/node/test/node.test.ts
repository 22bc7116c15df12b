import { describe, expect, it } from 'vitest';
import { GamifyClient, GamifyDeliveryError, GamifyValidationError, backoff, deriveMessageId } from '../src/index';
import { Fake, PK, SK, client, settle } from './fakes';

describe('configuration', () => {
  it('requires a secret key', () => {
    const fake = new Fake();
    expect(() => new GamifyClient({ secretKey: PK }, fake.env)).toThrow(GamifyValidationError);
    expect(() => new GamifyClient({ secretKey: PK }, fake.env)).toThrow(/secret key/);
    expect(() => new GamifyClient({ secretKey: '' }, fake.env)).toThrow(/secret key/);
    expect(() => new GamifyClient({ secretKey: 'sk_live_short' }, fake.env)).toThrow(/malformed/);
    expect(() => new GamifyClient({} as { secretKey: string }, fake.env)).toThrow(/secret key/);
    expect(new GamifyClient({ secretKey: SK, host: 'https://api.example/' }, fake.env).host).toBe('https://api.example');
  });
});

describe('track and helpers', () => {
  it('batches to /v1/events/batch with the secret key, messageId, timestamp and sentAt', async () => {
    const fake = new Fake();
    const gamify = client(fake, { flushAt: 2 });
    gamify.track({ userId: 'u1', event: 'purchase', properties: { orderId: 'o-1' }, timestamp: new Date('2026-02-01T00:00:00Z') });
    gamify.track({ userId: 'u1', event: 'custom', messageId: 'm-2' });
    await settle();
    expect(fake.sent).toHaveLength(1);
    const [request] = fake.sent;
    expect(request?.url).toBe('http://localhost:3000/v1/events/batch');
    expect(request?.init.headers.Authorization).toBe(`Bearer ${SK}`);
    expect(request?.body.sentAt).toBe('2026-03-01T12:00:00.000Z');
    const [first, second] = fake.events();
    expect(first).toMatchObject({ event: 'purchase', userId: 'u1', timestamp: '2026-02-01T00:00:00.000Z', properties: { orderId: 'o-1' } });
    expect(first?.messageId).toMatch(/^[0-9a-f-]{36}$/);
    expect(second).toMatchObject({ messageId: 'm-2', timestamp: '2026-03-01T12:00:00.000Z' });
  });

  it('purchase derives the messageId from the orderId, so a repeat is the same event', async () => {
    const fake = new Fake();
    const gamify = client(fake);
    const a = gamify.purchase({ userId: 'u1', orderId: 'o-42', amount: 4200, currency: 'EUR' });
    const b = gamify.purchase({ userId: 'u1', orderId: 'o-42', amount: 4200, currency: 'EUR' });
    expect(a).toBe('purchase:o-42');
    expect(b).toBe(a);
    await gamify.flush();
    expect(fake.events()).toEqual([
      expect.objectContaining({ event: 'purchase', messageId: 'purchase:o-42', properties: { orderId: 'o-42', amount: 4200, currency: 'EUR' } }),
      expect.objectContaining({ messageId: 'purchase:o-42' }),
    ]);
  });

  it('referralSuccess, questCompleted and levelUp derive their messageIds from business ids', async () => {
    const fake = new Fake();
    const gamify = client(fake);
    expect(gamify.referralSuccess({ referredUserId: 'u2', referralCode: 'FRIEND10', referrerUserId: 'u1' })).toBe(
      'referral_success:FRIEND10:u2',
    );
    expect(gamify.questCompleted({ userId: 'u1', questId: 'q-7' })).toBe('quest.completed:u1:q-7');
    expect(gamify.levelUp({ userId: 'u1', level: 3 })).toBe('user.leveled_up:u1:3');
    await gamify.flush();
    expect(fake.events().map((e) => [e.event, e.userId, e.properties])).toEqual([
      ['referral_success', 'u2', { referralCode: 'FRIEND10', referredUserId: 'u2', referrerUserId: 'u1' }],
      ['quest.completed', 'u1', { questId: 'q-7' }],
      ['user.leveled_up', 'u1', { level: 3 }],
    ]);
  });

  it('derived messageIds stay within 100 characters', () => {
    const id = deriveMessageId('purchase', 'o'.repeat(200));
    expect(id.length).toBeLessThanOrEqual(100);
    expect(id).toMatch(/^purchase:[0-9a-f]{64}$/);
    expect(deriveMessageId('purchase', 'o'.repeat(200))).toBe(id);
  });

  it('throws a clear error on bad arguments before anything is sent', async () => {
    const fake = new Fake();
    const gamify = client(fake, { flushAt: 1 });
    const bad: Array<[() => unknown, RegExp]> = [
      [() => gamify.purchase({ userId: 'u1', orderId: 'o', amount: 42.5, currency: 'EUR' }), /amount: must be a non-negative integer/],
      [() => gamify.purchase({ userId: 'u1', orderId: 'o', amount: -1, currency: 'EUR' }), /amount/],
      [() => gamify.purchase({ userId: 'u1', orderId: 'o', amount: 100, currency: 'eur' }), /currency: must be an ISO 4217 code/],
      [() => gamify.purchase({ userId: 'u1', orderId: '', amount: 100, currency: 'EUR' }), /orderId: must be a non-empty string/],
      [() => gamify.purchase({ userId: '', orderId: 'o', amount: 100, currency: 'EUR' }), /userId/],
      [() => gamify.referralSuccess({ referredUserId: 'u2', referralCode: '' }), /referralCode/],
      [() => gamify.levelUp({ userId: 'u1', level: 1.5 }), /level/],
      [() => gamify.questCompleted({ userId: 'u1', questId: 'a\nb' }), /questId: must not contain control characters/],
      [() => gamify.track({ userId: 'u1', event: 'x'.repeat(201) }), /event: must be at most 200/],
      [() => gamify.track({ userId: 'u1', event: 'e', properties: [] as unknown as Record<string, unknown> }), /properties: must be a plain object/],
      [() => gamify.track({ userId: 'u1', event: 'e', properties: { a: 'x\u0000' } }), /NUL/],
      [() => gamify.track({ userId: 'u1', event: 'e', timestamp: 'yesterday' }), /timestamp/],
      [() => gamify.track({ userId: 'u1', event: 'e', messageId: 'm'.repeat(101) }), /messageId/],
      [() => gamify.identify({ userId: 'u1', traits: 'pro' as unknown as Record<string, unknown> }), /traits/],
    ];
    for (const [call, message] of bad) {
      expect(call).toThrow(GamifyValidationError);
      expect(call).toThrow(message);
    }
    await fake.advance(60_000);
    expect(fake.sent).toHaveLength(0);
    expect(gamify.queued).toBe(0);
  });

  it('identify goes to /v1/identify with traits', async () => {
    const fake = new Fake();
    const gamify = client(fake);
    gamify.identify({ userId: 'u1', traits: { plan: 'pro' } });
    await gamify.flush();
    expect(fake.sent[0]?.url).toBe('http://localhost:3000/v1/identify');
    expect(fake.sent[0]?.body).toMatchObject({ userId: 'u1', traits: { plan: 'pro' } });
  });
});

describe('delivery', () => {
  it('sends after flushInterval with an unflushed queue', async () => {
    const fake = new Fake();
    const gamify = client(fake, { flushInterval: 10_000 });
    gamify.track({ userId: 'u1', event: 'e' });
    await fake.advance(9_999);
    expect(fake.sent).toHaveLength(0);
    await fake.advance(1);
    expect(fake.sent).toHaveLength(1);
  });

  it('retries network errors, 5xx, 408 and 429 with jittered backoff, honouring Retry-After', async () => {
    const fake = new Fake();
    fake.replies.push('network-error', { status: 503, headers: { 'Retry-After': '9' } }, { status: 429 });
    const gamify = client(fake, { maxRetries: 3 });
    gamify.purchase({ userId: 'u1', orderId: 'o-1', amount: 1, currency: 'EUR' });
    const done = gamify.flush();
    await settle();
    expect(fake.sent).toHaveLength(1);
    await fake.advance(249); // backoff(0) with random 0.5 = 250 ms
    expect(fake.sent).toHaveLength(1);
    await fake.advance(1);
    expect(fake.sent).toHaveLength(2);
    await fake.advance(8_999); // Retry-After: 9 beats backoff(1) = 500 ms
    expect(fake.sent).toHaveLength(2);
    await fake.advance(1);
    expect(fake.sent).toHaveLength(3);
    await fake.advance(1_000); // backoff(2) = 1 s
    await done;
    expect(fake.sent).toHaveLength(4);
    expect(new Set(fake.events().map((e) => e.messageId))).toEqual(new Set(['purchase:o-1']));
  });

  it('gives up after maxRetries and flush rejects naming the calls', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 500 }, { status: 500 }, { status: 500 });
    const errors: GamifyDeliveryError[] = [];
    const gamify = new GamifyClient({ secretKey: SK, maxRetries: 2, onError: (e) => errors.push(e) }, fake.env);
    gamify.track({ userId: 'u1', event: 'e', messageId: 'm-1' });
    const done = gamify.flush();
    const outcome = done.then(
      () => undefined,
      (error: unknown) => error,
    );
    await fake.advance(60_000);
    const error = await outcome;
    expect(error).toBeInstanceOf(GamifyDeliveryError);
    expect((error as GamifyDeliveryError).failed).toEqual([
      { event: 'e', messageId: 'm-1', status: 500, reason: '500 (after 3 attempts)' },
    ]);
    expect(fake.sent).toHaveLength(3);
  });

  it('does not retry other 4xx; a batch verdict drops only the items it names', async () => {
    const fake = new Fake();
    fake.replies.push({ status: 400, body: { error: { code: 'invalid_request', message: 'bad', details: { indexes: [0] } } } });
    const gamify = client(fake);
    gamify.track({ userId: 'u1', event: 'a', messageId: 'm-a' });
    gamify.track({ userId: 'u1', event: 'b', messageId: 'm-b' });
    const error = await gamify.flush().then(
      () => undefined,
      (e: unknown) => e as GamifyDeliveryError,
    );
    expect(error?.failed.map((f) => [f.messageId, f.status])).toEqual([['m-a', 400]]);
    expect(error?.message).toMatch(/invalid_request: bad/);
    expect(fake.sent).toHaveLength(2);
    expect((fake.sent[1]?.body.batch as Array<{ messageId: string }>).map((e) => e.messageId)).toEqual(['m-b']);
  });

  it('times a request out after timeout and retries it', async () => {
    const fake = new Fake();
    fake.replies.push('hang');
    const gamify = client(fake, { timeout: 2_000 });
    gamify.track({ userId: 'u1', event: 'e' });
    const done = gamify.flush();
    await fake.advance(2_000);
    expect(fake.sent).toHaveLength(1);
    await fake.advance(250);
    await done;
    expect(fake.sent).toHaveLength(2);
  });

  it('shutdown flushes, stops the timer and refuses later calls', async () => {
    const fake = new Fake();
    const gamify = client(fake);
    gamify.track({ userId: 'u1', event: 'e' });
    expect(fake.pending()).toEqual([10_000]);
    await gamify.shutdown();
    expect(fake.sent).toHaveLength(1);
    expect(fake.pending()).toEqual([]);
    expect(() => gamify.track({ userId: 'u1', event: 'e' })).toThrow(/shut down/);
  });

  it('splits large queues into batches of at most 100', async () => {
    const fake = new Fake();
    const gamify = client(fake, { flushAt: 1000 });
    for (let i = 0; i < 250; i++) gamify.track({ userId: 'u1', event: 'e' });
    await gamify.flush();
    expect(fake.sent.map((s) => (s.body.batch as unknown[]).length)).toEqual([100, 100, 50]);
  });

  it('backoff is full jitter', () => {
    expect(backoff(0, () => 0)).toBe(0);
    expect(backoff(2, () => 0.999_999)).toBe(1999);
    expect(backoff(20, () => 0.999_999)).toBeLessThan(30_000);
  });
});
