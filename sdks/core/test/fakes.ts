import type {
  DocumentLike,
  EventTargetLike,
  FetchLike,
  GamifyEnvironment,
  RequestInitLike,
  ResponseLike,
  StorageLike,
} from '../src/index';

export const PK = `pk_live_${'ab'.repeat(32)}`;
export const SK = `sk_live_${'ab'.repeat(32)}`;

/** A clock and timers that move only when the test says so. */
export class FakeClock {
  now = Date.parse('2026-01-01T00:00:00.000Z');
  private seq = 0;
  private timers = new Map<number, { at: number; callback: () => void }>();

  setTimeout = (callback: () => void, ms: number): number => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.now + ms, callback });
    return id;
  };

  clearTimeout = (handle: unknown): void => {
    this.timers.delete(handle as number);
  };

  /** Pending timers' delays from now, soonest first. */
  pending(): number[] {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  /** Moves time forward, firing due timers in order, letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].at);
      due[1].callback();
      await settle();
    }
    this.now = end;
    await settle();
  }
}

/** Lets every queued promise callback run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

export class MemoryStorage implements StorageLike {
  data = new Map<string, string>();
  getItem(key: string): string | null {
    return this.data.has(key) ? (this.data.get(key) as string) : null;
  }
  setItem(key: string, value: string): void {
    this.data.set(key, value);
  }
  removeItem(key: string): void {
    this.data.delete(key);
  }
}

export class Target implements EventTargetLike {
  private listeners = new Map<string, Set<() => void>>();
  addEventListener(type: string, listener: () => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)?.add(listener);
  }
  removeEventListener(type: string, listener: () => void): void {
    this.listeners.get(type)?.delete(listener);
  }
  dispatch(type: string): void {
    for (const listener of this.listeners.get(type) ?? []) listener();
  }
}

export class FakeDocument extends Target implements DocumentLike {
  visibilityState = 'visible';
  title = 'Shop';
  referrer = '';
}

export interface Sent {
  url: string;
  init: RequestInitLike;
  body: Record<string, unknown>;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

/**
 * A fake gateway: records requests, answers from a script, or throws. Unscripted, ingestion answers
 * 202 with an event id per event (`evt-1`, `evt-2`…) and reads 404.
 */
export class FakeServer {
  sent: Sent[] = [];
  replies: Array<Reply | 'network-error'> = [];
  /** Answers for GET requests by URL (checked before `replies`); a function may script a sequence. */
  reads = new Map<string, Reply | 'network-error' | (() => Reply | 'network-error' | Promise<Reply>)>();
  private eventSeq = 0;
  fetch: FetchLike = async (url, init) => {
    const body = init.body === undefined ? {} : (JSON.parse(init.body) as Record<string, unknown>);
    this.sent.push({ url, init, body });
    const read = init.method === 'GET' ? this.reads.get(url) : undefined;
    const reply = (typeof read === 'function' ? await read() : read) ?? this.replies.shift() ?? this.default(init.method, body);
    if (reply === 'network-error') throw new TypeError('Failed to fetch');
    return response(reply);
  };
  /** Requests other than the ingestion ones. */
  gets(): Sent[] {
    return this.sent.filter((s) => s.init.method === 'GET');
  }
  private default(method: string, body: Record<string, unknown>): Reply {
    if (method === 'GET') return { status: 404, body: { error: { code: 'not_found', message: 'not found' } } };
    if (Array.isArray(body.batch)) {
      const ids = body.batch.map(() => `evt-${++this.eventSeq}`);
      return { status: 202, body: { accepted: ids.length, ids } };
    }
    return { status: 202, body: { id: `evt-${++this.eventSeq}`, messageId: body.messageId } };
  }
  /** Every event sent in batches so far, in order. */
  events(): Array<Record<string, unknown>> {
    return this.sent.flatMap((s) => (Array.isArray(s.body.batch) ? (s.body.batch as Array<Record<string, unknown>>) : []));
  }
}

export function response(reply: Reply): ResponseLike {
  const headers = new Map(Object.entries(reply.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    status: reply.status,
    headers: { get: (name: string) => headers.get(name.toLowerCase()) ?? null },
    text: async () => (reply.body === undefined ? '' : JSON.stringify(reply.body)),
  };
}

export interface Harness {
  clock: FakeClock;
  server: FakeServer;
  storage: MemoryStorage;
  window: Target;
  document: FakeDocument;
  beacons: Array<{ url: string; data: string }>;
  warnings: string[];
  debugs: string[];
  env: GamifyEnvironment;
}

export function harness(overrides: Partial<GamifyEnvironment> = {}, storage = new MemoryStorage()): Harness {
  const clock = new FakeClock();
  const server = new FakeServer();
  const win = new Target();
  const doc = new FakeDocument();
  const beacons: Array<{ url: string; data: string }> = [];
  const warnings: string[] = [];
  const debugs: string[] = [];
  let n = 0;
  const env: GamifyEnvironment = {
    fetch: server.fetch,
    storage,
    sendBeacon: (url, data) => {
      beacons.push({ url, data });
      return true;
    },
    window: win,
    document: doc,
    location: { href: 'https://shop.example/products', pathname: '/products' },
    now: () => clock.now,
    random: () => 0.5,
    uuid: () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    console: {
      warn: (...args: unknown[]) => warnings.push(args.map(String).join(' ')),
      debug: (...args: unknown[]) => debugs.push(args.map(String).join(' ')),
    },
    ...overrides,
  };
  return { clock, server, storage, window: win, document: doc, beacons, warnings, debugs, env };
}
