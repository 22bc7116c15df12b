import { GamifyClient, type GamifyClientEnvironment, type RequestInitLike, type ResponseLike } from '../src/index';

export const SK = `sk_live_${'cd'.repeat(32)}`;
export const PK = `pk_live_${'cd'.repeat(32)}`;

/** `raw`: the body as it is, instead of `body` as JSON. */
export type Reply = { status: number; headers?: Record<string, string>; body?: unknown; raw?: string } | 'network-error' | 'hang';

/** A fake gateway plus timers that move only when the test says so. */
export class Fake {
  now = Date.parse('2026-03-01T12:00:00.000Z');
  sent: Array<{ url: string; init: RequestInitLike; body: Record<string, unknown> }> = [];
  replies: Reply[] = [];
  private timers = new Map<number, { at: number; callback: () => void }>();
  private seq = 0;

  env: GamifyClientEnvironment = {
    now: () => this.now,
    random: () => 0.5,
    setTimeout: (callback, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.now + ms, callback });
      return id;
    },
    clearTimeout: (handle) => {
      this.timers.delete(handle as number);
    },
    fetch: (url, init) => {
      this.sent.push({ url, init, body: init.body === undefined ? {} : (JSON.parse(init.body) as Record<string, unknown>) });
      const reply = this.replies.shift() ?? { status: 202, body: {} };
      if (reply === 'network-error') return Promise.reject(new TypeError('fetch failed'));
      if (reply === 'hang') {
        return new Promise<ResponseLike>((_, reject) => init.signal?.addEventListener('abort', () => reject(new Error('aborted'))));
      }
      const headers = new Map(Object.entries(reply.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
      return Promise.resolve({
        status: reply.status,
        headers: { get: (name: string) => headers.get(name.toLowerCase()) ?? null },
        text: async () => reply.raw ?? JSON.stringify(reply.body ?? {}),
      });
    },
  };

  /** Timers still pending, as delays from now (request timeouts included). */
  pending(): number[] {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      await settle();
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].at);
      due[1].callback();
    }
    this.now = end;
    await settle();
  }

  events(): Array<Record<string, unknown>> {
    return this.sent.flatMap((s) => (Array.isArray(s.body.batch) ? (s.body.batch as Array<Record<string, unknown>>) : []));
  }
}

export async function settle(): Promise<void> {
  for (let i = 0; i < 30; i++) await Promise.resolve();
}

export function client(fake: Fake, options: Partial<ConstructorParameters<typeof GamifyClient>[0]> = {}): GamifyClient {
  return new GamifyClient({ secretKey: SK, onError: () => undefined, ...options }, fake.env);
}
