/**
 * @gamify/core: the browser SDK. Sends behavioural events with a publishable key, batched, retried,
 * kept in localStorage until the gateway has acknowledged them, and handed to the browser with
 * `sendBeacon` / `fetch(…, {keepalive})` when the page goes away. Reads what the engine made of
 * them: an event's outcomes (publishable key), and with a user token the user's progress and
 * leaderboards.
 */

import { TRUSTED_EVENTS } from './contract';

export const VERSION = '0.1.0';

export { TRUSTED_EVENTS };

export type Properties = Record<string, unknown>;

export interface GamifyOptions {
  /** A publishable key, `pk_live_…`. A secret key is refused: it must never reach a browser. */
  apiKey: string;
  /** The gateway's base URL. Default `http://localhost:3000` (what `./scripts/dev.sh` runs). */
  host?: string;
  /** Send as soon as this many calls are queued. Default 10. */
  flushAt?: number;
  /** Send what is queued at least this often, in milliseconds. Default 5000. */
  flushInterval?: number;
  /** Calls kept while the gateway is unreachable; the oldest are dropped first. Default 1000. */
  maxQueueSize?: number;
  /** Log what the SDK drops or retries with `console.debug`. */
  debug?: boolean;
  /**
   * A user token, `ut_…`, minted by your server for the signed-in user (`@gamify/node`'s
   * `userToken(userId)`): what `progress()` and `leaderboard()` authenticate with. See `setUserToken()`.
   */
  userToken?: string;
}

export interface TrackOptions {
  /**
   * Once the gateway acknowledged the event, long-poll its outcomes and hand any awards to the
   * `onReward` callbacks. Such an event is sent at once rather than with the next batch.
   */
  awaitOutcome?: boolean;
}

/** An achievement the event unlocked. */
export interface AchievementAward {
  type: 'achievement';
  key: string;
  name: string;
  /** RFC 3339. */
  unlockedAt: string;
}

/** Points the event added (or took away); `balance` is the balance after it. */
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

/**
 * `pending`: not evaluated yet; `evaluated`: counted under the project's rules (awards may be
 * empty); `not_counted`: refused by the checks, a duplicate messageId, or sent without a userId.
 */
export type OutcomeStatus = 'pending' | 'evaluated' | 'not_counted';

/** `GET /v1/events/{eventId}/outcomes`. */
export interface Outcomes {
  eventId: string;
  status: OutcomeStatus;
  awards: Award[];
  /** Why it was not counted. */
  reason?: string;
  /** A duplicate messageId: the id of the copy that counted (its outcomes tell what it earned). */
  duplicateOf?: string;
}

/** What `onReward` callbacks receive: an event's awards, never empty. */
export interface Reward {
  eventId: string;
  awards: Award[];
}

export interface OutcomesOptions {
  /** Seconds the gateway may hold the request until the event is evaluated, 0–10. Default 0. */
  wait?: number;
}

/** A period of a leaderboard; RFC 3339 instants, `end` exclusive and null for `all_time`. */
export interface Period {
  start: string;
  end: string | null;
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
  /** The current period's first instant while the streak is alive; null when `length` is 0. */
  periodStart: string | null;
  freezesLeft: number;
  extendedToday: boolean;
}

export interface PointsState {
  balance: number;
  /** The level's key, or null below the first level. */
  level: string | null;
}

export interface LeaderboardStanding {
  /** Null while the user has no score in the current period. */
  rank: number | null;
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
  /** Entries per page. */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

/**
 * Why a read failed or a `track()` promise rejected. `code` is the gateway's error code
 * (`not_found`, `invalid_api_key`…) with `status` set, or one of the SDK's own:
 * `network_error`, `invalid_event`, `trusted_event`, `payload_too_large`, `queue_full`,
 * `unacknowledged` (handed to `sendBeacon` as the page was hidden: no answer to read),
 * `no_event_id`, `user_token_required`, `user_required`, `invalid_response`.
 */
export class GamifyError extends Error {
  override name = 'GamifyError';
  /** The gateway's `error.details`, when it sent any. */
  details?: { indexes?: unknown; [field: string]: unknown };
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
  ) {
    super(`Gamify: ${message}`);
  }
}

/** The subset of `Response` the SDK reads. */
export interface ResponseLike {
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}

export interface RequestInitLike {
  method: string;
  headers: Record<string, string>;
  /** Absent on reads (GET). */
  body?: string;
  keepalive?: boolean;
}

export type FetchLike = (url: string, init: RequestInitLike) => Promise<ResponseLike>;

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface EventTargetLike {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

export interface DocumentLike extends EventTargetLike {
  visibilityState?: string;
  title?: string;
  referrer?: string;
}

export type TimerHandle = unknown;

/**
 * Where the SDK meets the outside world. Every field defaults to the browser's own; tests and
 * unusual hosts (web views, workers) pass their own.
 */
export interface GamifyEnvironment {
  fetch?: FetchLike;
  /** `null`: keep nothing across reloads. */
  storage?: StorageLike | null;
  /** `null`: no beacon, unload delivery uses `fetch(…, {keepalive: true})`. */
  sendBeacon?: ((url: string, data: string) => boolean) | null;
  window?: EventTargetLike | null;
  document?: DocumentLike | null;
  location?: { href: string; pathname: string } | null;
  now?: () => number;
  random?: () => number;
  uuid?: () => string;
  setTimeout?: (callback: () => void, ms: number) => TimerHandle;
  clearTimeout?: (handle: TimerHandle) => void;
  console?: { warn(...args: unknown[]): void; debug(...args: unknown[]): void };
}

interface TrackBody {
  event: string;
  anonymousId: string;
  userId?: string;
  properties?: Properties;
  messageId: string;
  timestamp: string;
  context?: Properties;
}

interface IdentifyBody {
  userId: string;
  traits?: Properties;
  messageId: string;
  timestamp: string;
  context?: Properties;
}

type Call = { t: 'track'; b: TrackBody } | { t: 'identify'; b: IdentifyBody };

interface Sent {
  /** 2xx */
  ok?: boolean;
  /** The events' ids, in the batch's order (a 2xx's `ids`). */
  ids?: unknown;
  /** Retry later, no sooner than this many ms (0: backoff decides). */
  retryAfter?: number;
  /** Indexes of batch items the gateway refused (400/403 `details.indexes`). */
  refused?: number[];
  /** Why the calls were dropped. */
  error?: GamifyError;
}

/** A `track()` promise waiting for the gateway's acknowledgement. */
interface Waiter {
  ok: (eventId: string) => void;
  no: (error: GamifyError) => void;
  /** awaitOutcome */
  o?: boolean;
}

interface ErrorBody {
  error?: { code?: string; message?: string; details?: GamifyError['details'] };
}

const KEY_PATTERN = /^pk_live_[0-9a-f]{64}$/;
/** One request's items: well under the gateway's 500 events and 500 KB. */
const MAX_BATCH_ITEMS = 100;
const MAX_BATCH_BYTES = 400_000;
/** The gateway refuses one event over 32 KB. */
const MAX_EVENT_BYTES = 32_000;
/** What browsers allow in flight for keepalive requests and beacons. */
const UNLOAD_BUDGET = 64_000;
const BACKOFF_BASE = 1000;
const BACKOFF_MAX = 60_000;
/** awaitOutcome: requests of up to 10 s each while the event is pending (or not stored yet). */
const OUTCOME_ATTEMPTS = 4;
const OUTCOME_WAIT = 10;

function randomUuid(random: () => number): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(random() * 256);
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
  let hex = '';
  for (let i = 0; i < 16; i++) hex += ((bytes[i] as number) + 0x100).toString(16).slice(1);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Seconds or an HTTP date, as milliseconds from now; 0 when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number {
  if (!value) return 0;
  const seconds = Number(value);
  if (value.trim() !== '' && Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? 0 : Math.max(0, date - now);
}

/** Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt)). */
export function backoff(attempt: number, random: () => number): number {
  return Math.floor(random() * Math.min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt));
}

function bytes(text: string): number {
  // UTF-8 length without TextEncoder allocations for ASCII-only text.
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) n += c > 0x7ff ? 2 : 1;
  }
  return n;
}

function optional<T>(value: T | undefined | null, fallback: T): T {
  return value === undefined || value === null ? fallback : value;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function noop(): void {
  // nothing to do
}

/** `?a=1&b=2` of the defined values; '' when none. */
function query(params: Record<string, string | number | undefined>): string {
  const pairs: string[] = [];
  for (const name in params) {
    const value = params[name];
    if (value !== undefined) pairs.push(`${name}=${encodeURIComponent(value)}`);
  }
  return pairs.length ? `?${pairs.join('&')}` : '';
}

export class Gamify {
  static readonly TRUSTED_EVENTS = TRUSTED_EVENTS;
  static readonly VERSION = VERSION;

  readonly apiKey: string;
  readonly host: string;
  private readonly flushAt: number;
  private readonly flushInterval: number;
  private readonly maxQueueSize: number;
  private readonly debugOn: boolean;
  private readonly env: GamifyEnvironment;
  private readonly fetch: FetchLike | undefined;
  private readonly storage: StorageLike | null;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly uuid: () => string;
  private readonly storageKey: string;

  private queue: Call[];
  private anonymousIdValue: string;
  private userIdValue: string | undefined;
  private timer: TimerHandle | undefined;
  private retryTimer: TimerHandle | undefined;
  private attempt = 0;
  private flushing: Promise<void> = Promise.resolve();
  private userTokenValue: string | undefined;
  /** `track()` promises by messageId; gone with the page, unlike the queue. */
  private readonly waiters = new Map<string, Waiter>();
  /** messageIds of the request in flight. */
  private sending: string[] = [];
  private rewardCallbacks: Array<(reward: Reward) => void> = [];
  private readonly onHide: () => void;
  private readonly onVisibility: () => void;
  private readonly onOnline: () => void;

  constructor(options: GamifyOptions, env: GamifyEnvironment = {}) {
    const key = options && options.apiKey;
    if (typeof key !== 'string') throw new TypeError('Gamify: apiKey is required (a publishable key, pk_live_…)');
    if (key.indexOf('sk_') === 0) {
      throw new Error(
        'Gamify: a secret key (sk_…) must never be used in a browser. Use a publishable key (pk_live_…) here and keep the secret key on your server (@gamify/node).',
      );
    }
    if (!KEY_PATTERN.test(key)) {
      throw new Error('Gamify: malformed apiKey; expected pk_live_ followed by 64 lowercase hex characters');
    }
    this.apiKey = key;
    this.host = optional(options.host, 'http://localhost:3000').replace(/\/+$/, '');
    this.flushAt = Math.max(1, optional(options.flushAt, 10));
    this.flushInterval = Math.max(0, optional(options.flushInterval, 5000));
    this.maxQueueSize = Math.max(1, optional(options.maxQueueSize, 1000));
    this.debugOn = !!options.debug;
    this.env = env;
    this.setUserToken(options.userToken);

    const g = globalThis as unknown as {
      fetch?: FetchLike;
      localStorage?: StorageLike;
      window?: EventTargetLike;
      document?: DocumentLike;
    };
    this.fetch = env.fetch || (typeof g.fetch === 'function' ? (url, init) => (g.fetch as FetchLike)(url, init) : undefined);
    this.storage = env.storage !== undefined ? env.storage : safeLocalStorage();
    this.now = env.now || Date.now;
    this.random = env.random || Math.random;
    this.uuid = env.uuid || (() => randomUuid(this.random));
    this.storageKey = `gamify:${key.slice(8, 20)}:`;

    this.queue = this.load<Call[]>('queue', []).filter((c) => c && c.b && (c.t === 'track' || c.t === 'identify'));
    this.userIdValue = this.load<string | undefined>('user', undefined);
    this.anonymousIdValue = this.load<string>('anon', '') || this.newAnonymousId();

    this.onHide = () => this.unload();
    this.onVisibility = () => {
      const doc = this.doc();
      if (doc && doc.visibilityState === 'hidden') this.unload();
    };
    this.onOnline = () => {
      if (this.queue.length) void this.flush();
    };
    const win = env.window !== undefined ? env.window : g.window;
    const doc = this.doc();
    if (win) {
      win.addEventListener('pagehide', this.onHide);
      win.addEventListener('online', this.onOnline);
    }
    if (doc) doc.addEventListener('visibilitychange', this.onVisibility);

    // What an earlier page left unsent goes out now.
    if (this.queue.length) this.schedule(0);
  }

  /** The anonymous id (UUID v4) kept in localStorage until `reset()`. */
  get anonymousId(): string {
    return this.anonymousIdValue;
  }

  get userId(): string | undefined {
    return this.userIdValue;
  }

  /** Calls not yet acknowledged by the gateway. */
  get queued(): number {
    return this.queue.length;
  }

  get userToken(): string | undefined {
    return this.userTokenValue;
  }

  /**
   * Queues an event. The promise resolves with the event's id once the gateway acknowledged the
   * batch that carried it (after a reload it is gone; the event is still sent), and rejects with a
   * GamifyError when the event is dropped. Ignoring it is fine: it never rejects unhandled.
   */
  track(event: string, properties?: Properties, options?: TrackOptions): Promise<string> {
    let waiter: Waiter = { ok: noop, no: noop };
    const promise = new Promise<string>((ok, no) => {
      waiter = { ok, no, o: !!(options && options.awaitOutcome) };
    });
    promise.catch(noop);
    const refuse = (code: string, message: string): Promise<string> => {
      this.warn(message);
      waiter.no(new GamifyError(code, message));
      return promise;
    };
    if (typeof event !== 'string' || !event) return refuse('invalid_event', 'track(event) needs an event name');
    if (TRUSTED_EVENTS.indexOf(event) !== -1) {
      return refuse(
        'trusted_event',
        `"${event}" is a trusted event and is not sent from a browser: send it from your server with a secret key (@gamify/node).`,
      );
    }
    const body: TrackBody = {
      event,
      anonymousId: this.anonymousIdValue,
      messageId: this.uuid(),
      timestamp: new Date(this.now()).toISOString(),
      context: this.context(),
    };
    if (this.userIdValue) body.userId = this.userIdValue;
    if (properties) body.properties = properties;
    this.waiters.set(body.messageId, waiter);
    this.enqueue({ t: 'track', b: body }, waiter.o);
    return promise;
  }

  identify(userId: string, traits?: Properties): void {
    if (typeof userId !== 'string' || !userId) {
      this.warn('identify(userId) needs a non-empty user id');
      return;
    }
    this.userIdValue = userId;
    this.save('user', userId);
    const body: IdentifyBody = {
      userId,
      messageId: this.uuid(),
      timestamp: new Date(this.now()).toISOString(),
      context: this.context(),
    };
    if (traits) body.traits = traits;
    this.enqueue({ t: 'identify', b: body });
  }

  /** Forgets the user: the next events carry a new anonymous id and no user id; the user token goes too. */
  reset(): void {
    this.userIdValue = undefined;
    this.userTokenValue = undefined;
    this.remove('user');
    this.newAnonymousId();
  }

  /**
   * The user token (`ut_…`) for `progress()` and `leaderboard()`, or null to forget it. Kept in
   * memory only; `reset()` forgets it too. A secret key throws.
   */
  setUserToken(token: string | null | undefined): void {
    if (token && token.indexOf('sk_') === 0) throw new Error('Gamify: a secret key (sk_…) must never be used in a browser');
    this.userTokenValue = token || undefined;
  }

  /**
   * Calls `callback` with the awards of every event tracked with `{awaitOutcome: true}` that got
   * any. Returns the function that unsubscribes it.
   */
  onReward(callback: (reward: Reward) => void): () => void {
    this.rewardCallbacks = this.rewardCallbacks.concat(callback);
    return () => {
      this.rewardCallbacks = this.rewardCallbacks.filter((c) => c !== callback);
    };
  }

  /**
   * What the engine made of an event (`track()` resolves with its id), with the publishable key.
   * `wait`: seconds (0–10) the gateway may hold the request until it is evaluated.
   */
  outcomes(eventId: string, options?: OutcomesOptions): Promise<Outcomes> {
    let wait = options && options.wait;
    if (wait !== undefined) wait = Math.min(OUTCOME_WAIT, Math.max(0, Math.floor(wait)));
    return this.get<Outcomes>(`/v1/events/${encodeURIComponent(eventId)}/outcomes${query({ wait })}`, { 'x-api-key': this.apiKey });
  }

  /** The user's progress (the identified user by default), with the user token. */
  progress(userId?: string): Promise<Progress> {
    const user = userId || this.userIdValue;
    if (!user) return Promise.reject(new GamifyError('user_required', 'progress() needs a user id: identify(userId) first, or pass it'));
    return this.read<Progress>(`/v1/users/${encodeURIComponent(user)}/progress`);
  }

  /** One page of a leaderboard, with the user token. */
  leaderboard(key: string, options?: LeaderboardOptions): Promise<Leaderboard> {
    const o = options || {};
    const period = o.period instanceof Date ? o.period.toISOString() : o.period;
    return this.read<Leaderboard>(`/v1/leaderboards/${encodeURIComponent(key)}${query({ period, limit: o.limit, cursor: o.cursor })}`);
  }

  /**
   * Sends everything queued now (ignoring a pending backoff). Resolves when the attempt is over;
   * what could not be delivered stays queued and is retried.
   */
  flush(): Promise<void> {
    this.clear('retryTimer');
    this.flushing = this.flushing.then(() => this.drain());
    return this.flushing;
  }

  /** Stops timers and listeners. What is queued stays in storage for the next page. */
  close(): void {
    this.clear('timer');
    this.clear('retryTimer');
    const win = this.env.window !== undefined ? this.env.window : (globalThis as { window?: EventTargetLike }).window;
    const doc = this.doc();
    if (win) {
      win.removeEventListener('pagehide', this.onHide);
      win.removeEventListener('online', this.onOnline);
    }
    if (doc) doc.removeEventListener('visibilitychange', this.onVisibility);
  }

  // --- queue ---

  /** `now`: send at once rather than with the next batch. */
  private enqueue(call: Call, now?: boolean): void {
    if (bytes(JSON.stringify(call.b)) > MAX_EVENT_BYTES) {
      const message = `dropped "${call.t === 'track' ? call.b.event : '$identify'}": larger than 32 KB`;
      this.log(message);
      this.fail([call.b.messageId], new GamifyError('payload_too_large', message));
      return;
    }
    this.queue.push(call);
    while (this.queue.length > this.maxQueueSize) {
      const dropped = this.queue.shift() as Call;
      const message = `queue full (${this.maxQueueSize}): dropped the oldest call, ${dropped.b.messageId}`;
      this.log(message);
      this.fail([dropped.b.messageId], new GamifyError('queue_full', message));
    }
    this.persist();
    if (now || this.queue.length >= this.flushAt) {
      if (this.retryTimer === undefined) void this.flush();
    } else if (this.timer === undefined && this.retryTimer === undefined) {
      this.schedule(this.flushInterval);
    }
  }

  private schedule(ms: number): void {
    this.clear('timer');
    this.timer = this.setTimer(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
  }

  private async drain(): Promise<void> {
    this.clear('timer');
    while (this.queue.length) {
      const chunk = this.nextChunk();
      const sentIds = chunk.map((c) => c.b.messageId);
      this.sending = sentIds;
      const outcome = await this.send(chunk);
      this.sending = [];
      if (outcome.ok) {
        this.attempt = 0;
        this.drop(sentIds);
        this.acknowledged(sentIds, outcome.ids);
        continue;
      }
      if (outcome.refused) {
        // One verdict per batch: drop the refused items, send the rest again at once.
        const refused = outcome.refused.map((i) => sentIds[i]).filter((id): id is string => !!id);
        this.drop(refused.length ? refused : sentIds);
        this.fail(refused.length ? refused : sentIds, outcome.error);
        continue;
      }
      if (outcome.retryAfter !== undefined) {
        const delay = Math.max(outcome.retryAfter, backoff(this.attempt, this.random));
        this.attempt++;
        this.log(`delivery failed; retrying ${chunk.length} call(s) in ${delay} ms`);
        this.clear('retryTimer');
        this.retryTimer = this.setTimer(() => {
          this.retryTimer = undefined;
          void this.flush();
        }, delay);
        return;
      }
      this.drop(sentIds);
      this.fail(sentIds, outcome.error);
    }
  }

  /** An identify alone, or the longest run of track calls that fits one batch. */
  private nextChunk(): Call[] {
    const first = this.queue[0] as Call;
    if (first.t === 'identify') return [first];
    const chunk: Call[] = [];
    let size = 0;
    for (const call of this.queue) {
      if (call.t !== 'track' || chunk.length >= MAX_BATCH_ITEMS) break;
      size += bytes(JSON.stringify(call.b)) + 1;
      if (chunk.length && size > MAX_BATCH_BYTES) break;
      chunk.push(call);
    }
    return chunk;
  }

  private request(chunk: Call[], keyInBody: boolean): { url: string; body: string } {
    const first = chunk[0] as Call;
    const sentAt = new Date(this.now()).toISOString();
    const auth = keyInBody ? { apiKey: this.apiKey } : {};
    if (first.t === 'identify') {
      return { url: `${this.host}/v1/identify`, body: JSON.stringify({ ...auth, ...first.b, sentAt }) };
    }
    return { url: `${this.host}/v1/events/batch`, body: JSON.stringify({ ...auth, batch: chunk.map((c) => c.b), sentAt }) };
  }

  private async send(chunk: Call[]): Promise<Sent> {
    if (!this.fetch) return { retryAfter: 0 };
    const { url, body } = this.request(chunk, false);
    let response: ResponseLike;
    try {
      response = await this.fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'x-api-key': this.apiKey },
        body,
      });
    } catch (error) {
      this.log('network error', error);
      return { retryAfter: 0 };
    }
    const status = response.status;
    if (status === 408 || status === 429 || status >= 500) {
      return { retryAfter: parseRetryAfter(response.headers.get('Retry-After'), this.now()) };
    }
    const text = await response.text().catch(() => '');
    if (status >= 200 && status < 300) return { ok: true, ids: idsOf(text) };
    this.log(`dropped ${chunk.length} call(s): ${status} ${text}`);
    const error = errorOf(status, text);
    const indexes = error.details && error.details.indexes;
    if (chunk.length > 1 && (status === 400 || status === 403) && Array.isArray(indexes)) {
      return { refused: indexes.filter((i): i is number => typeof i === 'number'), error };
    }
    return { error };
  }

  /** The gateway acknowledged these calls: their track() promises resolve with the events' ids. */
  private acknowledged(messageIds: string[], ids: unknown): void {
    messageIds.forEach((messageId, i) => {
      const waiter = this.waiters.get(messageId);
      if (!waiter) return;
      this.waiters.delete(messageId);
      const id = Array.isArray(ids) ? (ids[i] as unknown) : undefined;
      if (typeof id !== 'string') {
        waiter.no(new GamifyError('no_event_id', 'no event id in the answer'));
        return;
      }
      waiter.ok(id);
      if (waiter.o) void this.awaitOutcome(id);
    });
  }

  /** These calls were dropped: their track() promises reject. */
  private fail(messageIds: string[], error?: GamifyError): void {
    for (const messageId of messageIds) {
      const waiter = this.waiters.get(messageId);
      this.waiters.delete(messageId);
      if (waiter) waiter.no(error as GamifyError);
    }
  }

  /** Long-polls an event's outcomes a bounded number of times; awards go to the onReward callbacks. */
  private async awaitOutcome(eventId: string): Promise<void> {
    for (let i = 0; i < OUTCOME_ATTEMPTS; i++) {
      try {
        const outcomes = await this.outcomes(eventId, { wait: OUTCOME_WAIT });
        if (outcomes.status === 'pending') continue;
        const awards = outcomes.awards || [];
        if (awards.length) this.reward({ eventId, awards });
        return;
      } catch (error) {
        // Not stored yet (404), or a failure worth another try; anything else will not change.
        const status = (error as GamifyError).status;
        if (status && status !== 404 && status !== 408 && status !== 429 && status < 500) {
          this.log(`outcomes of ${eventId}`, error);
          return;
        }
        await new Promise<void>((resolve) => this.setTimer(resolve, backoff(i + 1, this.random)));
      }
    }
  }

  private reward(reward: Reward): void {
    for (const callback of this.rewardCallbacks) {
      try {
        callback(reward);
      } catch (error) {
        this.warn('an onReward callback threw', error);
      }
    }
  }

  /** A read with the user token. */
  private read<T>(path: string): Promise<T> {
    const token = this.userTokenValue;
    if (!token) {
      return Promise.reject(new GamifyError('user_token_required', 'no user token: the userToken option or setUserToken()'));
    }
    return this.get<T>(path, { Authorization: `Bearer ${token}` });
  }

  private async get<T>(path: string, headers: Record<string, string>): Promise<T> {
    if (!this.fetch) throw new GamifyError('network_error', 'no fetch');
    let response: ResponseLike;
    try {
      response = await this.fetch(this.host + path, { method: 'GET', headers });
    } catch (error) {
      throw new GamifyError('network_error', `network error: ${String(error)}`);
    }
    const text = await response.text().catch(() => '');
    const status = response.status;
    if (status < 200 || status >= 300) throw errorOf(status, text);
    const body = parse(text);
    if (!body) throw new GamifyError('invalid_response', text.slice(0, 100), status);
    return body as T;
  }

  private drop(messageIds: string[]): void {
    if (!messageIds.length) return;
    this.queue = this.queue.filter((c) => messageIds.indexOf(c.b.messageId) === -1);
    this.persist();
  }

  // --- unload ---

  /**
   * The page is going away (or hidden, which on mobile is often the last chance): hand what is
   * queued to the browser in requests that need no CORS preflight (`text/plain`, key in the body),
   * within the 64 KB the browser allows for beacons and keepalive requests together. What does not
   * fit stays in storage for the next page.
   */
  private unload(): void {
    if (!this.queue.length) return;
    this.clear('timer');
    let budget = UNLOAD_BUDGET;
    const pending = this.queue.slice();
    while (pending.length) {
      const chunk = this.unloadChunk(pending, budget);
      if (!chunk.length) break;
      pending.splice(0, chunk.length);
      const { url, body } = this.request(chunk, true);
      budget -= bytes(body);
      const ids = chunk.map((c) => c.b.messageId);
      const beacon = this.env.sendBeacon !== undefined ? this.env.sendBeacon : browserBeacon();
      let queuedByBrowser = false;
      try {
        queuedByBrowser = !!beacon && beacon(url, body);
      } catch {
        queuedByBrowser = false;
      }
      if (queuedByBrowser) {
        // A beacon is fire-and-forget: queued by the browser is not delivered. While deliveries
        // fail (backing off, or offline) keep the calls for the next page too; the gateway
        // stores a messageId once, so a repeat costs nothing.
        if (this.attempt === 0 && !offline()) {
          this.drop(ids);
          // No answer to read: their track() promises cannot learn the events' ids, unless the
          // request in flight brings them.
          this.fail(
            ids.filter((id) => this.sending.indexOf(id) === -1),
            new GamifyError('unacknowledged', 'sent with sendBeacon as the page was hidden; the event id is unknown'),
          );
        }
      } else if (this.fetch) {
        this.fetch(url, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body, keepalive: true }).then(
          async (r) => {
            if (r.status >= 200 && r.status < 300) {
              this.drop(ids);
              this.acknowledged(ids, idsOf(await r.text().catch(() => '')));
            }
          },
          () => undefined,
        );
      }
    }
    // Hidden is not always gone: what did not fit goes out normally if the page lives on.
    if (this.queue.length) this.schedule(this.flushInterval);
  }

  private unloadChunk(pending: Call[], budget: number): Call[] {
    const first = pending[0] as Call;
    const overhead = 200 + this.apiKey.length;
    if (first.t === 'identify') return bytes(JSON.stringify(first.b)) + overhead <= budget ? [first] : [];
    const chunk: Call[] = [];
    let size = overhead;
    for (const call of pending) {
      if (call.t !== 'track' || chunk.length >= MAX_BATCH_ITEMS) break;
      size += bytes(JSON.stringify(call.b)) + 1;
      if (size > budget) break;
      chunk.push(call);
    }
    return chunk;
  }

  // --- helpers ---

  private context(): Properties {
    const context: Properties = { library: { name: '@gamify/core', version: VERSION } };
    const loc =
      this.env.location !== undefined ? this.env.location : (globalThis as { location?: { href: string; pathname: string } }).location;
    const doc = this.doc();
    if (loc) {
      context.page = { url: loc.href, path: loc.pathname, title: doc && doc.title, referrer: (doc && doc.referrer) || undefined };
    }
    return context;
  }

  private doc(): DocumentLike | null | undefined {
    return this.env.document !== undefined ? this.env.document : (globalThis as { document?: DocumentLike }).document;
  }

  private newAnonymousId(): string {
    this.anonymousIdValue = this.uuid();
    this.save('anon', this.anonymousIdValue);
    return this.anonymousIdValue;
  }

  private setTimer(callback: () => void, ms: number): TimerHandle {
    const handle = (this.env.setTimeout || setTimeout)(callback, ms);
    const unref = (handle as { unref?: () => void } | null)?.unref;
    if (typeof unref === 'function') unref.call(handle);
    return handle;
  }

  private clear(which: 'timer' | 'retryTimer'): void {
    const handle = this[which];
    if (handle !== undefined) (this.env.clearTimeout || clearTimeout)(handle as ReturnType<typeof setTimeout>);
    this[which] = undefined;
  }

  private persist(): void {
    this.save('queue', this.queue);
  }

  private load<T>(name: string, fallback: T): T {
    try {
      const raw = this.storage && this.storage.getItem(this.storageKey + name);
      return raw ? (JSON.parse(raw) as T) : fallback;
    } catch {
      return fallback;
    }
  }

  private save(name: string, value: unknown): void {
    try {
      if (this.storage) this.storage.setItem(this.storageKey + name, JSON.stringify(value));
    } catch (error) {
      this.log('could not write localStorage', error);
    }
  }

  private remove(name: string): void {
    try {
      if (this.storage) this.storage.removeItem(this.storageKey + name);
    } catch {
      // nothing kept, nothing to remove
    }
  }

  private warn(message: string, ...rest: unknown[]): void {
    (this.env.console || console).warn(`[Gamify] ${message}`, ...rest);
  }

  private log(message: string, ...rest: unknown[]): void {
    if (this.debugOn) (this.env.console || console).debug(`[Gamify] ${message}`, ...rest);
  }
}

/** A 2xx's event ids: `ids` of a batch, `[id]` of a single event. */
function idsOf(text: string): unknown {
  const body = (parse(text) || {}) as { ids?: unknown; id?: unknown };
  return body.ids || [body.id];
}

function errorOf(status: number, text: string): GamifyError {
  const error = ((parse(text) || {}) as ErrorBody).error || {};
  const result = new GamifyError(error.code || `http_${status}`, `${status} ${error.message || text.slice(0, 200)}`, status);
  result.details = error.details;
  return result;
}

function safeLocalStorage(): StorageLike | null {
  try {
    const storage = (globalThis as { localStorage?: StorageLike }).localStorage;
    if (!storage) return null;
    const probe = '__gamify_probe__';
    storage.setItem(probe, probe);
    storage.removeItem(probe);
    return storage;
  } catch {
    return null;
  }
}

function offline(): boolean {
  const nav = (globalThis as { navigator?: { onLine?: boolean } }).navigator;
  return !!nav && nav.onLine === false;
}

function browserBeacon(): ((url: string, data: string) => boolean) | null {
  const nav = (globalThis as { navigator?: { sendBeacon?: (url: string, data?: BodyInit | null) => boolean } }).navigator;
  if (!nav || typeof nav.sendBeacon !== 'function') return null;
  // A string body goes out as text/plain;charset=UTF-8: a CORS-safelisted type, no preflight.
  return (url, data) => (nav.sendBeacon as (url: string, data?: BodyInit | null) => boolean).call(nav, url, data);
}
