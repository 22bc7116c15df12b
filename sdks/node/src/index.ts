/**
 * @gamify/node: the server SDK. Sends every event, trusted ones included, with a secret key;
 * typed helpers derive the messageId from the business id so a repeated call is stored once.
 * Reads and changes what the gamification engine keeps (progress, points, leaderboards, outcomes),
 * mints user tokens for browsers, publishes rules (management token) and verifies webhooks.
 */
import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';

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
  /**
   * For `rules.*`: the deployment's ADMIN_TOKEN or a management token, sent as
   * `Authorization: Bearer …`. Without it `rules.*` reject with GamifyValidationError.
   */
  managementToken?: string;
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
  /** Absent on GET. */
  body?: string;
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

// --- the engine's API ---

export interface AchievementAward {
  type: 'achievement';
  key: string;
  name: string;
  /** RFC 3339. */
  unlockedAt: string;
}

/** Points added (or taken away); `balance` is the balance after it. */
export interface PointsAward {
  type: 'points';
  key: string;
  amount: number;
  balance: number;
  reason: string;
}

/** A level reached on a points key: level keys, `previous` null before the first level. */
export interface LevelAward {
  type: 'level';
  key: string;
  level: string;
  previous: string | null;
}

export interface StreakAward {
  type: 'streak';
  key: string;
  change: 'extended' | 'broken';
  length: number;
  longest: number;
}

export type Award = AchievementAward | PointsAward | LevelAward | StreakAward;

/** `pending`: not evaluated yet; `not_counted`: evaluated, and no rule counted it. */
export type OutcomeStatus = 'pending' | 'evaluated' | 'not_counted';

/** `GET /v1/events/{eventId}/outcomes`. */
export interface Outcomes {
  eventId: string;
  status: OutcomeStatus;
  awards: Award[];
}

export interface OutcomesOptions {
  /** Seconds (0–10) the gateway may hold the request until the event is evaluated. Default 0. */
  wait?: number;
}

/** RFC 3339 instants; `end` exclusive. */
export interface Period {
  start: string;
  end: string;
}

export interface UnlockedAchievement {
  key: string;
  name: string;
  unlockedAt: string;
  eventId: string;
}

export interface StreakState {
  length: number;
  longest: number;
  periodStart: string;
  freezesLeft: number;
  extendedToday: boolean;
}

export interface PointsState {
  balance: number;
  /** The level's key, or null below the first level. */
  level: string | null;
}

export interface LeaderboardStanding {
  rank: number;
  score: number;
  period: Period;
}

/** `GET /v1/users/{userId}/progress`. */
export interface Progress {
  userId: string;
  metrics: Record<string, number>;
  achievements: UnlockedAchievement[];
  streaks: Record<string, StreakState>;
  points: Record<string, PointsState>;
  leaderboards: Record<string, LeaderboardStanding>;
}

export interface LeaderboardEntry {
  rank: number;
  userId: string;
  score: number;
}

/** `GET /v1/leaderboards/{key}`: one page of a period's ranking. */
export interface Leaderboard {
  key: string;
  period: Period;
  entries: LeaderboardEntry[];
  /** Pass it back as `cursor` for the next page; null on the last. */
  nextCursor: string | null;
}

export interface LeaderboardOptions {
  /** `current` (default), `previous`, or a period's start (RFC 3339, or a Date). */
  period?: 'current' | 'previous' | (string & {}) | Date;
  limit?: number;
  cursor?: string;
}

export interface LedgerEntry {
  id: string;
  amount: number;
  reason: string;
  /** The event that earned it; null for a manual adjustment. */
  eventId: string | null;
  createdAt: string;
}

/** `GET /v1/users/{userId}/points/{key}/ledger`: newest first, one page. */
export interface LedgerPage {
  data: LedgerEntry[];
  nextCursor: string | null;
}

export interface LedgerOptions {
  cursor?: string;
}

export interface AdjustPointsParams {
  /** A non-zero integer; negative takes points away. */
  amount: number;
  reason: string;
  /**
   * A repeat with the same key returns the first result instead of adjusting again. Default: a
   * UUID v4 made for this call and reused by its own retries; pass your own (e.g. derived from an
   * order id) to make repeats of the call itself safe.
   */
  idempotencyKey?: string;
}

/** `POST /v1/users/{userId}/points/{key}/adjustments` → 201. */
export interface PointsAdjustment {
  id: string;
  amount: number;
  reason: string;
  balance: number;
  createdAt: string;
}

export interface UserTokenOptions {
  /** The token's lifetime; default the gateway's. */
  ttlSeconds?: number;
}

/** A user token for a browser (`@gamify/core`'s `userToken`): reads that user's progress and leaderboards. */
export interface UserToken {
  token: string;
  expiresAt: string;
}

/** `from_now`: the rules count events from now on; `replay`: the project's past events are evaluated again first. */
export type RulesApply = 'from_now' | 'replay';

export type RuleVersionState = 'replaying' | 'active' | 'retired' | 'failed';

/** A rules document, as the engine defines it (sent and returned as JSON, unchanged). */
export type RulesDocument = Readonly<Record<string, unknown>> | readonly unknown[];

export interface PublishRulesOptions {
  apply: RulesApply;
}

/** `PUT /v1/projects/{projectId}/rules` → 201. */
export interface PublishedRules {
  version: number;
  createdAt: string;
  apply: RulesApply;
}

/** `GET /v1/projects/{projectId}/rules`: the active version. */
export interface ActiveRules {
  version: number;
  rules: RulesDocument;
  apply: RulesApply;
  state: RuleVersionState;
  createdAt: string;
  activatedAt: string | null;
}

/** `GET /v1/projects/{projectId}/rules/versions/{version}`. */
export interface RuleVersion {
  version: number;
  apply: RulesApply;
  state: RuleVersionState;
  progress: { eventsDone: number; eventsTotal: number };
  createdAt: string;
  activatedAt: string | null;
}

/** `client.rules`: the management API's rules, with the `managementToken`. */
export interface RulesApi {
  /** A new version; with `replay` it is `replaying` until the past events are evaluated again. Not retried. */
  publish(projectId: string, rules: RulesDocument, options: PublishRulesOptions): Promise<PublishedRules>;
  get(projectId: string): Promise<ActiveRules>;
  /** One version's state, e.g. a replay's progress. */
  version(projectId: string, version: number): Promise<RuleVersion>;
}

/** An error answer of the gateway, or a request that failed (network, timeout) after the retries. */
export class GamifyApiError extends Error {
  override name = 'GamifyApiError';
  constructor(
    /** HTTP status; undefined for a network error or timeout. */
    readonly status: number | undefined,
    /** The gateway's `error.code` (`not_found`, `invalid_api_key`…), or `network_error`, `timeout`, `invalid_response`. */
    readonly code: string,
    message: string,
    /** The gateway's `error.details`. */
    readonly details?: unknown,
  ) {
    super(`Gamify: ${message}`);
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
const MAX_WAIT = 10;
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

  /** The management API's rules: needs the `managementToken` option. */
  readonly rules: RulesApi;
  private readonly managementToken: string | undefined;
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
    this.managementToken = options.managementToken === undefined ? undefined : text('managementToken', options.managementToken, 1000);
    const project = (projectId: string): string => `/v1/projects/${segment('projectId', projectId)}/rules`;
    this.rules = {
      publish: async (projectId, rules, publish) => {
        const path = project(projectId);
        if (rules === null || typeof rules !== 'object') throw new GamifyValidationError('rules', 'must be a JSON object or array');
        const apply = publish && publish.apply;
        if (apply !== 'from_now' && apply !== 'replay') throw new GamifyValidationError('apply', 'must be "from_now" or "replay"');
        // Not retried: each publish is a new version (and a replay), and nothing makes a repeat the same one.
        return this.request<PublishedRules>('PUT', path, this.management(), { body: { rules, apply }, retry: false });
      },
      get: async (projectId) => this.request<ActiveRules>('GET', project(projectId), this.management()),
      version: async (projectId, version) => {
        const path = project(projectId);
        if (!Number.isSafeInteger(version) || version < 1) throw new GamifyValidationError('version', 'must be a positive integer');
        return this.request<RuleVersion>('GET', `${path}/versions/${version}`, this.management());
      },
    };
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

  /** A user's progress: metrics, achievements, streaks, points and levels, leaderboard standings. */
  async progress(userId: string): Promise<Progress> {
    return this.request<Progress>('GET', `/v1/users/${segment('userId', userId)}/progress`, this.secret());
  }

  /**
   * A user token (`ut_…`) for that user's browser: `new Gamify({ apiKey, userToken })` then reads
   * its progress and leaderboards. Mint it where the user is signed in, e.g. when rendering the page.
   */
  async userToken(userId: string, options: UserTokenOptions = {}): Promise<UserToken> {
    const path = `/v1/users/${segment('userId', userId)}/tokens`;
    const body: { ttlSeconds?: number } = {};
    if (options.ttlSeconds !== undefined) body.ttlSeconds = integer('ttlSeconds', options.ttlSeconds, 1);
    return this.request<UserToken>('POST', path, this.secret(), { body });
  }

  /**
   * Adds (or with a negative amount takes away) points by hand. Idempotent: every attempt of one
   * call, retries included, carries the same `Idempotency-Key`, so a retry never adjusts twice.
   */
  async adjustPoints(userId: string, key: string, params: AdjustPointsParams): Promise<PointsAdjustment> {
    const path = `/v1/users/${segment('userId', userId)}/points/${segment('key', key)}/adjustments`;
    const p = params ?? ({} as AdjustPointsParams);
    const amount = integer('amount', p.amount);
    if (amount === 0) throw new GamifyValidationError('amount', 'must not be 0');
    if (typeof p.reason !== 'string' || !p.reason.trim()) throw new GamifyValidationError('reason', 'must be a non-empty string');
    const idempotencyKey = p.idempotencyKey === undefined ? randomUUID() : text('idempotencyKey', p.idempotencyKey, 255);
    return this.request<PointsAdjustment>('POST', path, this.secret(), {
      body: { amount, reason: p.reason },
      headers: { 'Idempotency-Key': idempotencyKey },
    });
  }

  /** One page of a leaderboard (the current period by default). */
  async leaderboard(key: string, options: LeaderboardOptions = {}): Promise<Leaderboard> {
    const path = `/v1/leaderboards/${segment('key', key)}`;
    const period = options.period instanceof Date ? time('period', options.period, 0) : options.period;
    if (period !== undefined) text('period', period, 100);
    const limit = options.limit === undefined ? undefined : integer('limit', options.limit, 1);
    const cursor = options.cursor === undefined ? undefined : text('cursor', options.cursor, 1000);
    return this.request<Leaderboard>('GET', path + query({ period, limit, cursor }), this.secret());
  }

  /** One page of a user's points ledger on one points key, newest first. */
  async ledger(userId: string, key: string, options: LedgerOptions = {}): Promise<LedgerPage> {
    const path = `/v1/users/${segment('userId', userId)}/points/${segment('key', key)}/ledger`;
    const cursor = options.cursor === undefined ? undefined : text('cursor', options.cursor, 1000);
    return this.request<LedgerPage>('GET', path + query({ cursor }), this.secret());
  }

  /**
   * What the engine made of an event (its id: the `id` of a 202, or of `GET /v1/events`). With
   * `wait` the gateway holds the request up to that many seconds (0–10) until it is evaluated; the
   * request's timeout grows by as much.
   */
  async outcomes(eventId: string, options: OutcomesOptions = {}): Promise<Outcomes> {
    const path = `/v1/events/${segment('eventId', eventId)}/outcomes`;
    const wait = options.wait === undefined ? undefined : integer('wait', options.wait, 0);
    if (wait !== undefined && wait > MAX_WAIT) throw new GamifyValidationError('wait', `must be at most ${MAX_WAIT} seconds`);
    return this.request<Outcomes>('GET', path + query({ wait }), this.secret(), { timeout: this.timeout + (wait ?? 0) * 1000 });
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

  private secret(): Record<string, string> {
    return { 'x-api-key': this.secretKey };
  }

  private management(): Record<string, string> {
    if (!this.managementToken) {
      throw new GamifyValidationError('managementToken', 'rules.* need a management token (the managementToken option, or ADMIN_TOKEN)');
    }
    return { Authorization: `Bearer ${this.managementToken}` };
  }

  /**
   * One API call with its retries (network errors, timeouts, 408, 429, 5xx; up to maxRetries, never
   * sooner than Retry-After) unless `retry` is false. Resolves with the parsed 2xx body.
   */
  private async request<T>(
    method: 'GET' | 'POST' | 'PUT',
    path: string,
    auth: Record<string, string>,
    init: { body?: unknown; headers?: Record<string, string>; retry?: boolean; timeout?: number } = {},
  ): Promise<T> {
    const headers: Record<string, string> = { ...auth, ...init.headers, 'User-Agent': `gamify-node/${VERSION}` };
    if (init.body !== undefined) headers['Content-Type'] = 'application/json';
    const body = init.body === undefined ? undefined : JSON.stringify(init.body);
    const route = `${method} ${path.split('?')[0]}`;
    for (let attempt = 0; ; attempt++) {
      const result = await this.call(route, this.host + path, { method, headers, body }, init.timeout ?? this.timeout);
      if (result.ok) return result.value as T;
      if (init.retry === false || !result.retryable || attempt >= this.maxRetries) throw result.error;
      await this.sleep(Math.max(result.retryAfter, backoff(attempt, this.random)));
    }
  }

  private async call(
    route: string,
    url: string,
    init: RequestInitLike,
    timeout: number,
  ): Promise<{ ok: true; value: unknown } | { ok: false; retryable: boolean; retryAfter: number; error: GamifyApiError }> {
    const controller = new AbortController();
    const timer = this.setTimer(() => controller.abort(), timeout);
    let response: ResponseLike;
    let answer: string;
    try {
      response = await this.fetch(url, { ...init, signal: controller.signal });
      answer = await response.text();
    } catch (error) {
      const [code, reason] = controller.signal.aborted
        ? ['timeout', `timed out after ${timeout} ms`]
        : ['network_error', `network error: ${(error as Error).message}`];
      return { ok: false, retryable: true, retryAfter: 0, error: new GamifyApiError(undefined, code, `${route}: ${reason}`) };
    } finally {
      this.clearTimer(timer);
    }
    const status = response.status;
    let parsed: unknown;
    try {
      parsed = JSON.parse(answer);
    } catch {
      parsed = undefined;
    }
    if (status >= 200 && status < 300) {
      if (parsed !== null && typeof parsed === 'object') return { ok: true, value: parsed };
      const error = new GamifyApiError(status, 'invalid_response', `${route}: ${status} with a body not JSON: ${answer.slice(0, 200)}`);
      return { ok: false, retryable: false, retryAfter: 0, error };
    }
    const e = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
    const code = typeof e?.code === 'string' ? e.code : `http_${status}`;
    const message = typeof e?.message === 'string' ? e.message : answer.slice(0, 200);
    return {
      ok: false,
      retryable: status === 408 || status === 429 || status >= 500,
      retryAfter: parseRetryAfter(response.headers.get('retry-after'), this.now()),
      error: new GamifyApiError(status, code, `${route}: ${status} ${code}${message ? `: ${message}` : ''}`, e?.details),
    };
  }

  private sleep(ms: number): Promise<void> {
    // Not unref'd: a process awaiting flush() or shutdown() stays alive through the backoff.
    return new Promise((resolve) => (this.sleepTimer ?? setTimeout)(resolve, ms));
  }
}

/** A path segment: a non-empty string without control characters, percent-encoded. */
function segment(field: string, value: unknown): string {
  return encodeURIComponent(text(field, value, 255));
}

function integer(field: string, value: unknown, min?: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || (min !== undefined && value < min)) {
    throw new GamifyValidationError(field, min === undefined ? 'must be an integer' : `must be an integer ≥ ${min}`);
  }
  return value;
}

/** `?a=1&b=2` of the defined values; '' when none. */
function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined) search.set(name, String(value));
  const text = search.toString();
  return text ? `?${text}` : '';
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

// --- webhooks ---

export type WebhookEventType = 'achievement.unlocked' | 'points.changed' | 'level.changed' | 'streak.extended' | 'streak.broken';

export interface WebhookEventData {
  projectId: string;
  userId: string;
  /** The event that caused it; null when none did (a manual points adjustment). */
  eventId: string | null;
  /** The rest depends on the type (the award's fields). */
  [field: string]: unknown;
}

/** A verified webhook body. */
export interface WebhookEvent {
  /** One of WebhookEventType; a type added later arrives as it is. */
  type: WebhookEventType | (string & {});
  timestamp: string;
  data: WebhookEventData;
}

/** A `Headers` (fetch, undici) or a plain object such as Node's `req.headers`, names in any case. */
export type WebhookHeaders =
  | { get(name: string): string | null | undefined }
  | Readonly<Record<string, string | readonly string[] | undefined>>;

export interface VerifyWebhookOptions {
  /** How far `webhook-timestamp` may be from now, either way. Default 300. */
  toleranceSeconds?: number;
  /** Now, as a Date or milliseconds since the epoch (as `Date.now()`). Default the clock. */
  now?: Date | number;
}

export type WebhookVerificationErrorCode =
  | 'missing_header'
  | 'invalid_timestamp'
  | 'timestamp_out_of_tolerance'
  | 'invalid_secret'
  | 'invalid_signature'
  | 'invalid_payload';

/** A webhook that must not be trusted: answer it 400 (or 401) and do not act on it. */
export class WebhookVerificationError extends Error {
  override name = 'WebhookVerificationError';
  constructor(
    readonly code: WebhookVerificationErrorCode,
    message: string,
  ) {
    super(`Gamify webhook: ${message}`);
  }
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Verifies a webhook per Standard Webhooks and returns its parsed body. `payload` is the raw body,
 * exactly as received (not parsed and serialized again); `secret` is the endpoint's `whsec_…`
 * secret. Throws WebhookVerificationError when a header is missing, the timestamp is further than
 * `toleranceSeconds` from now, or no `v1` signature matches (compared in constant time).
 */
export function verifyWebhook(
  payload: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string,
  options: VerifyWebhookOptions = {},
): WebhookEvent {
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  for (const [name, value] of [
    ['webhook-id', id],
    ['webhook-timestamp', timestamp],
    ['webhook-signature', signatures],
  ] as const) {
    if (!value) throw new WebhookVerificationError('missing_header', `missing ${name} header`);
  }
  const tolerance = options.toleranceSeconds ?? 300;
  if (typeof tolerance !== 'number' || !(tolerance >= 0)) throw new GamifyValidationError('toleranceSeconds', 'must be a number ≥ 0');
  if (!/^[0-9]{1,15}$/.test(timestamp as string)) {
    throw new WebhookVerificationError('invalid_timestamp', 'webhook-timestamp is not unix seconds');
  }
  const now = options.now === undefined ? Date.now() : options.now instanceof Date ? options.now.getTime() : options.now;
  if (typeof now !== 'number' || !Number.isFinite(now)) throw new GamifyValidationError('now', 'must be a valid Date or milliseconds');
  if (Math.abs(now / 1000 - Number(timestamp)) > tolerance) {
    throw new WebhookVerificationError('timestamp_out_of_tolerance', `webhook-timestamp is more than ${tolerance} s from now`);
  }

  if (typeof secret !== 'string') throw new WebhookVerificationError('invalid_secret', 'the secret must be a string (whsec_…)');
  const encoded = secret.startsWith('whsec_') ? secret.slice(6) : secret;
  if (!BASE64.test(encoded)) throw new WebhookVerificationError('invalid_secret', 'the secret is not whsec_ followed by base64');
  const key = Buffer.from(encoded, 'base64');

  const body =
    typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest();
  let valid = false;
  for (const entry of (signatures as string).split(/\s+/)) {
    const [version, signature] = entry.replace(/,$/, '').split(',', 2);
    if (version !== 'v1' || !signature || !BASE64.test(signature)) continue;
    const given = Buffer.from(signature, 'base64');
    if (given.length === expected.length && timingSafeEqual(given, expected)) valid = true;
  }
  if (!valid) throw new WebhookVerificationError('invalid_signature', 'no v1 signature matches');

  let event: unknown;
  try {
    event = JSON.parse(body.toString('utf8'));
  } catch {
    event = undefined;
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new WebhookVerificationError('invalid_payload', 'the signed body is not a JSON object');
  }
  return event as WebhookEvent;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (!headers || typeof headers !== 'object') return undefined;
  const get = (headers as { get?: unknown }).get;
  if (typeof get === 'function') return (get.call(headers, name) as string | null | undefined) ?? undefined;
  for (const [key, value] of Object.entries(headers as Readonly<Record<string, string | readonly string[] | undefined>>)) {
    if (key.toLowerCase() === name) return typeof value === 'string' ? value : value ? value.join(' ') : undefined;
  }
  return undefined;
}
