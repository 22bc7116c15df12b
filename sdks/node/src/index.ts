/**
 * @gamify/node: the server SDK. Sends every event, trusted ones included, with a secret key;
 * typed helpers derive the messageId from the business id so a repeated call is stored once.
 */
import { createHash, randomUUID } from 'node:crypto';

export const VERSION = '0.1.0';

export type Properties = Record<string, unknown>;

export interface GamifyClientOptions {
  /** A secret key, `sk_live_…`. Anything else is refused. */
  secretKey: string;
  /** The gateway's base URL. Default `http://localhost:3000` (what `./scripts/dev.sh` runs). */
  host?: string;
  /** Send as soon as this many calls are queued. Default 20. */
  flushAt?: number;
  /** Send what is queued at least this often, in milliseconds. Default 10 000. */
  flushInterval?: number;
  /** Retries of one request (network errors, 5xx, 408, 429) before its calls are given up. Default 3. */
  maxRetries?: number;
  /** One request's timeout in milliseconds. Default 10 000. */
  timeout?: number;
  /** Calls kept in memory; past it the oldest are given up (reported to onError). Default 10 000. */
  maxQueueSize?: number;
  /** Failures of background flushes (and of every flush) are reported here. Default: console.error. */
  onError?: (error: GamifyDeliveryError) => void;
}

export interface TrackParams {
  userId: string;
  event: string;
  properties?: Properties;
  /** The dedup key: the same messageId (per project, for secret keys) is stored once. Default: a UUID v4. */
  messageId?: string;
  /** When it happened; default now. */
  timestamp?: Date | string;
}

export interface IdentifyParams {
  userId: string;
  traits?: Properties;
  messageId?: string;
  timestamp?: Date | string;
}

export interface PurchaseParams {
  userId: string;
  orderId: string;
  /** Integer amount in minor units (cents). */
  amount: number;
  /** ISO 4217 code, e.g. `EUR`. */
  currency: string;
  timestamp?: Date | string;
  properties?: Properties;
}

export interface ReferralSuccessParams {
  referredUserId: string;
  referralCode: string;
  referrerUserId?: string;
  timestamp?: Date | string;
  properties?: Properties;
}

export interface QuestCompletedParams {
  userId: string;
  questId: string;
  timestamp?: Date | string;
  properties?: Properties;
}

export interface LevelUpParams {
  userId: string;
  level: number;
  timestamp?: Date | string;
  properties?: Properties;
}

/** The subset of `Response` the client reads. */
export interface ResponseLike {
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}

export interface RequestInitLike {
  method: string;
  headers: Record<string, string>;
  body: string;
  signal?: AbortSignal;
}

export type FetchLike = (url: string, init: RequestInitLike) => Promise<ResponseLike>;

export type TimerHandle = unknown;

/** Where the client meets the outside world; every field defaults to Node's own (tests pass fakes). */
export interface GamifyClientEnvironment {
  fetch?: FetchLike;
  now?: () => number;
  random?: () => number;
  setTimeout?: (callback: () => void, ms: number) => TimerHandle;
  clearTimeout?: (handle: TimerHandle) => void;
}

/** A bad argument, thrown before anything is queued or sent. */
export class GamifyValidationError extends TypeError {
  override name = 'GamifyValidationError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`Gamify: ${field}: ${message}`);
  }
}

export interface FailedCall {
  event: string;
  messageId: string;
  /** HTTP status, or undefined for a network error or timeout. */
  status?: number;
  reason: string;
}

/** Calls that could not be delivered: refused by the gateway or still failing after maxRetries. */
export class GamifyDeliveryError extends Error {
  override name = 'GamifyDeliveryError';
  constructor(readonly failed: FailedCall[]) {
    super(
      `Gamify: ${failed.length} call(s) not delivered: ${failed
        .slice(0, 3)
        .map((f) => `${f.event} (${f.messageId}): ${f.reason}`)
        .join('; ')}${failed.length > 3 ? '; …' : ''}`,
    );
  }
}

interface Body {
  event?: string;
  userId: string;
  properties?: Properties;
  traits?: Properties;
  messageId: string;
  timestamp: string;
  context: Properties;
}

interface Call {
  kind: 'track' | 'identify';
  body: Body;
}

const SECRET_KEY = /^sk_live_[0-9a-f]{64}$/;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const CURRENCY = /^[A-Z]{3}$/;
const MAX_BATCH_ITEMS = 100;
const MAX_BATCH_BYTES = 400_000;
const MAX_EVENT_BYTES = 32_000;
const BACKOFF_BASE = 500;
const BACKOFF_MAX = 30_000;
const LIBRARY = { name: '@gamify/node', version: VERSION };

function text(field: string, value: unknown, max: number): string {
  if (typeof value !== 'string' || value.length === 0) throw new GamifyValidationError(field, 'must be a non-empty string');
  if ([...value].length > max) throw new GamifyValidationError(field, `must be at most ${max} characters`);
  if (CONTROL.test(value)) throw new GamifyValidationError(field, 'must not contain control characters');
  return value;
}

function object(field: string, value: unknown): Properties | undefined {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new GamifyValidationError(field, 'must be a plain object');
  }
  let json: string;
  try {
    json = JSON.stringify(value);
  } catch (error) {
    throw new GamifyValidationError(field, `must be JSON-serializable (${(error as Error).message})`);
  }
  if (json.includes('\\u0000')) throw new GamifyValidationError(field, 'must not contain NUL characters');
  return value as Properties;
}

function time(field: string, value: unknown, now: number): string {
  if (value === undefined) return new Date(now).toISOString();
  const date = value instanceof Date ? value : typeof value === 'string' ? new Date(value) : undefined;
  if (!date || Number.isNaN(date.getTime())) throw new GamifyValidationError(field, 'must be a Date or an RFC 3339 string');
  const year = date.getUTCFullYear();
  if (year < 1 || year > 9999) throw new GamifyValidationError(field, 'must be within the years 0001-9999');
  return date.toISOString();
}

/** `prefix:id`, or `prefix:sha256(id)` when that would not fit the gateway's 100 characters. */
export function deriveMessageId(prefix: string, ...ids: string[]): string {
  const plain = `${prefix}:${ids.join(':')}`;
  if (plain.length <= 100) return plain;
  return `${prefix}:${createHash('sha256').update(ids.join('\u0000')).digest('hex')}`.slice(0, 100);
}

export function parseRetryAfter(value: string | null, now: number): number {
  if (!value) return 0;
  const seconds = Number(value);
  if (value.trim() !== '' && Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? 0 : Math.max(0, date - now);
}

/** Exponential backoff with full jitter: uniform in [0, min(30 s, 0.5 s·2^attempt)). */
export function backoff(attempt: number, random: () => number): number {
  return Math.floor(random() * Math.min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt));
}

export class GamifyClient {
  readonly host: string;
  private readonly secretKey: string;
  private readonly flushAt: number;
  private readonly flushInterval: number;
  private readonly maxRetries: number;
  private readonly timeout: number;
  private readonly maxQueueSize: number;
  private readonly onError: (error: GamifyDeliveryError) => void;
  private readonly fetch: FetchLike;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly setTimer: (callback: () => void, ms: number) => TimerHandle;
  private readonly clearTimer: (handle: TimerHandle) => void;
  private readonly sleepTimer: ((callback: () => void, ms: number) => TimerHandle) | undefined;

  private queue: Call[] = [];
  private timer: TimerHandle | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(options: GamifyClientOptions, env: GamifyClientEnvironment = {}) {
    const key = options && options.secretKey;
    if (typeof key !== 'string' || !key.startsWith('sk_')) {
      throw new GamifyValidationError(
        'secretKey',
        'a secret key (sk_live_…) is required; publishable keys (pk_live_…) belong in browsers (@gamify/core)',
      );
    }
    if (!SECRET_KEY.test(key)) throw new GamifyValidationError('secretKey', 'malformed: expected sk_live_ and 64 lowercase hex characters');
    this.secretKey = key;
    this.host = (options.host ?? 'http://localhost:3000').replace(/\/+$/, '');
    this.flushAt = positive('flushAt', options.flushAt, 20, 1);
    this.flushInterval = positive('flushInterval', options.flushInterval, 10_000, 0);
    this.maxRetries = positive('maxRetries', options.maxRetries, 3, 0);
    this.timeout = positive('timeout', options.timeout, 10_000, 1);
    this.maxQueueSize = positive('maxQueueSize', options.maxQueueSize, 10_000, 1);
    this.onError = options.onError ?? ((error) => console.error(error.message));
    const globalFetch = (globalThis as { fetch?: FetchLike }).fetch;
    const fetch = env.fetch ?? globalFetch;
    if (!fetch) throw new Error('Gamify: no global fetch (Node 18+ is required), and none was given');
    this.fetch = fetch;
    this.now = env.now ?? Date.now;
    this.random = env.random ?? Math.random;
    this.setTimer =
      env.setTimeout ??
      ((callback, ms) => {
        const handle = setTimeout(callback, ms);
        handle.unref(); // never keeps a process alive on its own: shutdown() is what flushes at exit
        return handle;
      });
    this.sleepTimer = env.setTimeout;
    this.clearTimer = env.clearTimeout ?? ((handle) => clearTimeout(handle as ReturnType<typeof setTimeout>));
  }

  /** Calls queued and not yet delivered. */
  get queued(): number {
    return this.queue.length;
  }

  /** Queues one event. Throws GamifyValidationError on a bad argument, before anything is sent. */
  track(params: TrackParams): string {
    if (!params || typeof params !== 'object') throw new GamifyValidationError('track', 'expects { userId, event, … }');
    const body: Body = {
      event: text('event', params.event, 200),
      userId: text('userId', params.userId, 255),
      messageId: params.messageId === undefined ? randomUUID() : text('messageId', params.messageId, 100),
      timestamp: time('timestamp', params.timestamp, this.now()),
      context: { library: LIBRARY },
    };
    const properties = object('properties', params.properties);
    if (properties) body.properties = properties;
    return this.enqueue({ kind: 'track', body });
  }

  /** Queues an identify: the user's traits are merged into the end user. */
  identify(params: IdentifyParams): string {
    if (!params || typeof params !== 'object') throw new GamifyValidationError('identify', 'expects { userId, traits }');
    const body: Body = {
      userId: text('userId', params.userId, 255),
      messageId: params.messageId === undefined ? randomUUID() : text('messageId', params.messageId, 100),
      timestamp: time('timestamp', params.timestamp, this.now()),
      context: { library: LIBRARY },
    };
    const traits = object('traits', params.traits);
    if (traits) body.traits = traits;
    return this.enqueue({ kind: 'identify', body });
  }

  /** `purchase`, stored once per orderId however often it is sent. Returns the messageId. */
  purchase(params: PurchaseParams): string {
    const p = params ?? ({} as PurchaseParams);
    const orderId = text('orderId', p.orderId, 255);
    if (typeof p.amount !== 'number' || !Number.isSafeInteger(p.amount) || p.amount < 0) {
      throw new GamifyValidationError('amount', 'must be a non-negative integer in minor units (e.g. 4200 for 42.00)');
    }
    if (typeof p.currency !== 'string' || !CURRENCY.test(p.currency)) {
      throw new GamifyValidationError('currency', 'must be an ISO 4217 code in capitals, e.g. EUR');
    }
    return this.track({
      userId: p.userId,
      event: 'purchase',
      messageId: deriveMessageId('purchase', orderId),
      timestamp: p.timestamp,
      properties: { ...object('properties', p.properties), orderId, amount: p.amount, currency: p.currency },
    });
  }

  /** `referral_success` for the referred user, stored once per (referralCode, referredUserId). */
  referralSuccess(params: ReferralSuccessParams): string {
    const p = params ?? ({} as ReferralSuccessParams);
    const referredUserId = text('referredUserId', p.referredUserId, 255);
    const referralCode = text('referralCode', p.referralCode, 255);
    const properties: Properties = { ...object('properties', p.properties), referralCode, referredUserId };
    if (p.referrerUserId !== undefined) properties.referrerUserId = text('referrerUserId', p.referrerUserId, 255);
    return this.track({
      userId: referredUserId,
      event: 'referral_success',
      messageId: deriveMessageId('referral_success', referralCode, referredUserId),
      timestamp: p.timestamp,
      properties,
    });
  }

  /** `quest.completed`, stored once per (userId, questId). */
  questCompleted(params: QuestCompletedParams): string {
    const p = params ?? ({} as QuestCompletedParams);
    const userId = text('userId', p.userId, 255);
    const questId = text('questId', p.questId, 255);
    return this.track({
      userId,
      event: 'quest.completed',
      messageId: deriveMessageId('quest.completed', userId, questId),
      timestamp: p.timestamp,
      properties: { ...object('properties', p.properties), questId },
    });
  }

  /** `user.leveled_up`, stored once per (userId, level). */
  levelUp(params: LevelUpParams): string {
    const p = params ?? ({} as LevelUpParams);
    const userId = text('userId', p.userId, 255);
    if (typeof p.level !== 'number' || !Number.isSafeInteger(p.level) || p.level < 0) {
      throw new GamifyValidationError('level', 'must be a non-negative integer');
    }
    return this.track({
      userId,
      event: 'user.leveled_up',
      messageId: deriveMessageId('user.leveled_up', userId, String(p.level)),
      timestamp: p.timestamp,
      properties: { ...object('properties', p.properties), level: p.level },
    });
  }

  /**
   * Sends everything queued so far. Resolves when it is delivered; rejects with a
   * GamifyDeliveryError naming what was refused or still failing after maxRetries (also reported
   * to onError).
   */
  flush(): Promise<void> {
    this.clearFlushTimer();
    const run = this.flushing.then(() => this.drain());
    this.flushing = run.catch(() => undefined);
    return run;
  }

  /** Flushes, then stops the timer; later calls throw. Await it before a process or handler ends. */
  async shutdown(): Promise<void> {
    this.closed = true;
    try {
      await this.flush();
    } finally {
      this.clearFlushTimer();
    }
  }

  private enqueue(call: Call): string {
    if (this.closed) throw new Error('Gamify: the client is shut down');
    if (Buffer.byteLength(JSON.stringify(call.body)) > MAX_EVENT_BYTES) {
      throw new GamifyValidationError(call.kind === 'track' ? 'properties' : 'traits', 'the event is over 32 KB serialized');
    }
    this.queue.push(call);
    if (this.queue.length > this.maxQueueSize) {
      const dropped = this.queue.splice(0, this.queue.length - this.maxQueueSize);
      this.onError(new GamifyDeliveryError(dropped.map((c) => failed(c, undefined, 'queue full (maxQueueSize)'))));
    }
    if (this.queue.length >= this.flushAt) {
      this.flush().catch(this.onError);
    } else if (this.timer === undefined) {
      this.timer = this.setTimer(() => {
        this.timer = undefined;
        this.flush().catch(this.onError);
      }, this.flushInterval);
    }
    return call.body.messageId;
  }

  private clearFlushTimer(): void {
    if (this.timer !== undefined) this.clearTimer(this.timer);
    this.timer = undefined;
  }

  private async drain(): Promise<void> {
    const calls = this.queue;
    this.queue = [];
    const failures: FailedCall[] = [];
    while (calls.length) {
      const chunk = nextChunk(calls);
      calls.splice(0, chunk.length);
      failures.push(...(await this.deliver(chunk)));
    }
    if (failures.length) {
      const error = new GamifyDeliveryError(failures);
      throw error;
    }
  }

  /** One request with its retries; returns what could not be delivered. */
  private async deliver(chunk: Call[]): Promise<FailedCall[]> {
    for (let attempt = 0; ; attempt++) {
      const result = await this.attempt(chunk);
      if (result.ok) return [];
      if (!result.retryable) {
        if (result.refused && chunk.length > 1) {
          // One verdict per batch: give up the items it names, send the others again.
          const refused = new Set(result.refused);
          const rest = chunk.filter((_, i) => !refused.has(i));
          const dropped = chunk.filter((_, i) => refused.has(i)).map((c) => failed(c, result.status, result.reason));
          if (rest.length && dropped.length) return [...dropped, ...(await this.deliver(rest))];
        }
        return chunk.map((c) => failed(c, result.status, result.reason));
      }
      if (attempt >= this.maxRetries) return chunk.map((c) => failed(c, result.status, `${result.reason} (after ${attempt + 1} attempts)`));
      await this.sleep(Math.max(result.retryAfter, backoff(attempt, this.random)));
    }
  }

  private async attempt(
    chunk: Call[],
  ): Promise<{ ok: true } | { ok: false; retryable: boolean; retryAfter: number; status?: number; reason: string; refused?: number[] }> {
    const first = chunk[0] as Call;
    const sentAt = new Date(this.now()).toISOString();
    const [path, body] =
      first.kind === 'identify'
        ? ['/v1/identify', { ...first.body, sentAt }]
        : ['/v1/events/batch', { batch: chunk.map((c) => c.body), sentAt }];
    const controller = new AbortController();
    const timer = this.setTimer(() => controller.abort(), this.timeout);
    let response: ResponseLike;
    let answer = '';
    try {
      response = await this.fetch(this.host + path, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Authorization: `Bearer ${this.secretKey}`,
          'User-Agent': `gamify-node/${VERSION}`,
        },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      answer = await response.text().catch(() => '');
    } catch (error) {
      const reason = controller.signal.aborted ? `timed out after ${this.timeout} ms` : `network error: ${(error as Error).message}`;
      return { ok: false, retryable: true, retryAfter: 0, reason };
    } finally {
      this.clearTimer(timer);
    }
    const status = response.status;
    if (status >= 200 && status < 300) return { ok: true };
    let code = '';
    let refused: number[] | undefined;
    try {
      const parsed = JSON.parse(answer) as { error?: { code?: string; message?: string; details?: { indexes?: unknown } } };
      code = [parsed.error?.code, parsed.error?.message].filter(Boolean).join(': ');
      const indexes = parsed.error?.details?.indexes;
      if (Array.isArray(indexes)) refused = indexes.filter((i): i is number => typeof i === 'number');
    } catch {
      code = answer.slice(0, 200);
    }
    const reason = `${status}${code ? ` ${code}` : ''}`;
    const retryable = status === 408 || status === 429 || status >= 500;
    return { ok: false, retryable, retryAfter: parseRetryAfter(response.headers.get('retry-after'), this.now()), status, reason, refused };
  }

  private sleep(ms: number): Promise<void> {
    // Not unref'd: a process awaiting flush() or shutdown() stays alive through the backoff.
    return new Promise((resolve) => (this.sleepTimer ?? setTimeout)(resolve, ms));
  }
}

function positive(field: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new GamifyValidationError(field, `must be a number ≥ ${min}`);
  }
  return value;
}

function failed(call: Call, status: number | undefined, reason: string): FailedCall {
  return { event: call.body.event ?? '$identify', messageId: call.body.messageId, status, reason };
}

function nextChunk(calls: Call[]): Call[] {
  const first = calls[0] as Call;
  if (first.kind === 'identify') return [first];
  const chunk: Call[] = [];
  let size = 0;
  for (const call of calls) {
    if (call.kind !== 'track' || chunk.length >= MAX_BATCH_ITEMS) break;
    size += Buffer.byteLength(JSON.stringify(call.body)) + 1;
    if (chunk.length && size > MAX_BATCH_BYTES) break;
    chunk.push(call);
  }
  return chunk;
}
