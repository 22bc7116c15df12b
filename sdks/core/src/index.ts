/**
 * @gamify/core: the browser SDK. Sends behavioural events with a publishable key, batched, retried,
 * kept in localStorage until the gateway has acknowledged them, and handed to the browser with
 * `sendBeacon` / `fetch(…, {keepalive})` when the page goes away.
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
  body: string;
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

interface Outcome {
  /** 2xx */
  ok?: boolean;
  /** Retry later, no sooner than this many ms (0: backoff decides). */
  retryAfter?: number;
  /** Indexes of batch items the gateway refused (400/403 `details.indexes`). */
  refused?: number[];
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

  track(event: string, properties?: Properties): void {
    if (typeof event !== 'string' || !event) {
      this.warn('track(event) needs an event name');
      return;
    }
    if (TRUSTED_EVENTS.indexOf(event) !== -1) {
      this.warn(
        `"${event}" is a trusted event and is not sent from a browser: send it from your server with a secret key (@gamify/node).`,
      );
      return;
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
    this.enqueue({ t: 'track', b: body });
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

  /** Forgets the user: the next events carry a new anonymous id and no user id. */
  reset(): void {
    this.userIdValue = undefined;
    this.remove('user');
    this.newAnonymousId();
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

  private enqueue(call: Call): void {
    if (bytes(JSON.stringify(call.b)) > MAX_EVENT_BYTES) {
      this.log(`dropped "${call.t === 'track' ? call.b.event : '$identify'}": larger than 32 KB`);
      return;
    }
    this.queue.push(call);
    while (this.queue.length > this.maxQueueSize) {
      const dropped = this.queue.shift() as Call;
      this.log(`queue full (${this.maxQueueSize}): dropped the oldest call, ${dropped.b.messageId}`);
    }
    this.persist();
    if (this.queue.length >= this.flushAt) {
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
      const outcome = await this.send(chunk);
      if (outcome.ok) {
        this.attempt = 0;
        this.drop(sentIds);
        continue;
      }
      if (outcome.refused) {
        // One verdict per batch: drop the refused items, send the rest again at once.
        const refused = outcome.refused.map((i) => sentIds[i]).filter((id): id is string => !!id);
        this.drop(refused.length ? refused : sentIds);
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

  private async send(chunk: Call[]): Promise<Outcome> {
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
    if (status >= 200 && status < 300) return { ok: true };
    if (status === 408 || status === 429 || status >= 500) {
      return { retryAfter: parseRetryAfter(response.headers.get('Retry-After'), this.now()) };
    }
    let text = '';
    try {
      text = await response.text();
    } catch {
      // the status says enough
    }
    this.log(`dropped ${chunk.length} call(s): ${status} ${text}`);
    if (chunk.length > 1 && (status === 400 || status === 403)) {
      try {
        const indexes = (JSON.parse(text) as { error?: { details?: { indexes?: unknown } } }).error?.details?.indexes;
        if (Array.isArray(indexes)) return { refused: indexes.filter((i): i is number => typeof i === 'number') };
      } catch {
        // not JSON: drop the whole chunk
      }
    }
    return {};
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
        if (this.attempt === 0 && !offline()) this.drop(ids);
      } else if (this.fetch) {
        this.fetch(url, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body, keepalive: true }).then(
          (r) => {
            if (r.status >= 200 && r.status < 300) this.drop(ids);
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

  private warn(message: string): void {
    (this.env.console || console).warn(`[Gamify] ${message}`);
  }

  private log(message: string, ...rest: unknown[]): void {
    if (this.debugOn) (this.env.console || console).debug(`[Gamify] ${message}`, ...rest);
  }
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
