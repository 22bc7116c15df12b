import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { GamifyValidationError, WebhookVerificationError, verifyWebhook, type WebhookHeaders } from '../src/index';

// The test's own signer, straight from the convention: base64(HMAC-SHA256(key, "id.timestamp.body"))
// with the key the base64 after `whsec_`.
const KEY = randomBytes(24);
const SECRET = `whsec_${KEY.toString('base64')}`;
const NOW = Date.parse('2026-03-01T12:00:00Z');
const TIMESTAMP = String(NOW / 1000);
const ID = 'msg_2tZ7gGz8yUq1';
const BODY = JSON.stringify({
  type: 'achievement.unlocked',
  timestamp: '2026-03-01T12:00:00Z',
  data: { projectId: 'p1', userId: 'u1', eventId: 'e1', key: 'first-lesson', name: 'First lesson', unlockedAt: '2026-03-01T11:59:59Z' },
});

function sign(body: string | Buffer, id = ID, timestamp = TIMESTAMP, key: Buffer = KEY): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64')}`;
}

function headers(signature = sign(BODY), timestamp = TIMESTAMP): Record<string, string> {
  return { 'webhook-id': ID, 'webhook-timestamp': timestamp, 'webhook-signature': signature };
}

function refused(run: () => unknown): WebhookVerificationError {
  let error: unknown;
  try {
    run();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(WebhookVerificationError);
  return error as WebhookVerificationError;
}

describe('verifyWebhook', () => {
  it('accepts the Standard Webhooks example vector', () => {
    const event = verifyWebhook(
      '{"test": 2432232314}',
      {
        'webhook-id': 'msg_p5jXN8AQM9LWM0D4loKWxJek',
        'webhook-timestamp': '1614265330',
        'webhook-signature': 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
      },
      'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      { now: 1614265330 * 1000 },
    );
    expect(event).toEqual({ test: 2432232314 });
  });

  it('returns the parsed event for a body signed with node:crypto, as a string or bytes', () => {
    const event = verifyWebhook(BODY, headers(), SECRET, { now: NOW });
    expect(event.type).toBe('achievement.unlocked');
    expect(event.data).toMatchObject({ projectId: 'p1', userId: 'u1', eventId: 'e1', key: 'first-lesson' });
    expect(verifyWebhook(new TextEncoder().encode(BODY), headers(), SECRET, { now: new Date(NOW) })).toEqual(event);
    // bytes that are a view into a larger buffer
    const padded = Buffer.concat([Buffer.from('xx'), Buffer.from(BODY), Buffer.from('yy')]);
    expect(verifyWebhook(padded.subarray(2, padded.length - 2), headers(), SECRET, { now: NOW })).toEqual(event);
  });

  it('reads headers from a plain object in any case, an array value, or a Headers', () => {
    const mixed = { 'Webhook-Id': ID, 'WEBHOOK-TIMESTAMP': TIMESTAMP, 'Webhook-Signature': [sign('other'), sign(BODY)] };
    expect(verifyWebhook(BODY, mixed, SECRET, { now: NOW }).type).toBe('achievement.unlocked');
    expect(verifyWebhook(BODY, new Headers(headers()), SECRET, { now: NOW }).type).toBe('achievement.unlocked');
    const getter: WebhookHeaders = { get: (name: string) => headers()[name] ?? null };
    expect(verifyWebhook(BODY, getter, SECRET, { now: NOW }).type).toBe('achievement.unlocked');
  });

  it('refuses a tampered body', () => {
    const tampered = BODY.replace('"u1"', '"u2"');
    expect(refused(() => verifyWebhook(tampered, headers(), SECRET, { now: NOW })).code).toBe('invalid_signature');
    expect(refused(() => verifyWebhook(`${BODY} `, headers(), SECRET, { now: NOW })).code).toBe('invalid_signature');
  });

  it('refuses a signature made with another secret, or over another id or timestamp', () => {
    const other = `whsec_${randomBytes(24).toString('base64')}`;
    expect(refused(() => verifyWebhook(BODY, headers(), other, { now: NOW })).code).toBe('invalid_signature');
    const otherId = { ...headers(), 'webhook-id': 'msg_other' };
    expect(refused(() => verifyWebhook(BODY, otherId, SECRET, { now: NOW })).code).toBe('invalid_signature');
    const later = String(Number(TIMESTAMP) + 1);
    expect(refused(() => verifyWebhook(BODY, headers(sign(BODY), later), SECRET, { now: NOW })).code).toBe('invalid_signature');
  });

  it('refuses a timestamp outside the tolerance, either way; 300 s by default', () => {
    const at = (offset: number): Record<string, string> => {
      const timestamp = String(Number(TIMESTAMP) + offset);
      return headers(sign(BODY, ID, timestamp), timestamp);
    };
    expect(verifyWebhook(BODY, at(-300), SECRET, { now: NOW }).type).toBe('achievement.unlocked');
    expect(verifyWebhook(BODY, at(300), SECRET, { now: NOW }).type).toBe('achievement.unlocked');
    expect(refused(() => verifyWebhook(BODY, at(-301), SECRET, { now: NOW })).code).toBe('timestamp_out_of_tolerance');
    expect(refused(() => verifyWebhook(BODY, at(301), SECRET, { now: NOW })).code).toBe('timestamp_out_of_tolerance');
    expect(refused(() => verifyWebhook(BODY, at(-61), SECRET, { now: NOW, toleranceSeconds: 60 })).code).toBe('timestamp_out_of_tolerance');
    expect(verifyWebhook(BODY, at(-3600), SECRET, { now: NOW, toleranceSeconds: 3600 }).type).toBe('achievement.unlocked');
    // without `now`: the clock (this timestamp is years away from it)
    expect(refused(() => verifyWebhook(BODY, headers(), SECRET)).code).toBe('timestamp_out_of_tolerance');
  });

  it('accepts any one matching v1 signature among several, ignoring other versions', () => {
    const good = sign(BODY);
    const bad = sign('something else');
    const v1a = `v1a,${good.slice(3)}`;
    expect(verifyWebhook(BODY, headers(`${bad} ${good}`), SECRET, { now: NOW }).type).toBe('achievement.unlocked');
    expect(verifyWebhook(BODY, headers(`${good} ${bad}`), SECRET, { now: NOW }).type).toBe('achievement.unlocked');
    expect(verifyWebhook(BODY, headers(`v1,not-base64! ${good}`), SECRET, { now: NOW }).type).toBe('achievement.unlocked');
    expect(refused(() => verifyWebhook(BODY, headers(`${bad} ${v1a}`), SECRET, { now: NOW })).code).toBe('invalid_signature');
    expect(refused(() => verifyWebhook(BODY, headers(good.slice(3)), SECRET, { now: NOW })).code).toBe('invalid_signature');
    // a truncated signature is refused, not compared (timingSafeEqual needs equal lengths)
    expect(refused(() => verifyWebhook(BODY, headers(`v1,${good.slice(3, 20)}`), SECRET, { now: NOW })).code).toBe('invalid_signature');
  });

  it('refuses missing headers, a malformed timestamp or secret, and a signed body that is not a JSON object', () => {
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const partial = Object.fromEntries(Object.entries(headers()).filter(([key]) => key !== name));
      const error = refused(() => verifyWebhook(BODY, partial, SECRET, { now: NOW }));
      expect([error.code, error.message]).toEqual(['missing_header', `Gamify webhook: missing ${name} header`]);
    }
    expect(refused(() => verifyWebhook(BODY, headers(sign(BODY, ID, '17e8'), '17e8'), SECRET, { now: NOW })).code).toBe('invalid_timestamp');
    expect(refused(() => verifyWebhook(BODY, headers(), 'whsec_not base64!', { now: NOW })).code).toBe('invalid_secret');
    expect(refused(() => verifyWebhook('not json', headers(sign('not json')), SECRET, { now: NOW })).code).toBe('invalid_payload');
    expect(refused(() => verifyWebhook('[1]', headers(sign('[1]')), SECRET, { now: NOW })).code).toBe('invalid_payload');
    expect(() => verifyWebhook(BODY, headers(), SECRET, { now: NOW, toleranceSeconds: -1 })).toThrow(GamifyValidationError);
  });
});
