// @vitest-environment happy-dom
import { Gamify, type FetchLike, type RequestInitLike } from '@gamify/core';
import { StrictMode, act, memo, useEffect, type ReactNode } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  GamifyProvider,
  useLeaderboard,
  useProgress,
  useRewards,
  useTrack,
  type Award,
  type Leaderboard,
  type Progress,
  type ReadState,
  type RewardsState,
} from '../src/index';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const PK = `pk_live_${'ef'.repeat(32)}`;
const HOST = 'http://gamify.test';
const POINTS: Award = { type: 'points', key: 'xp', amount: 10, balance: 110, reason: 'lesson' };

type Reply = { status: number; body: unknown };

/** A fake gateway: 202 with ids for events, GETs answered from `reads` (404 otherwise). */
class Gateway {
  requests: Array<{ url: string; init: RequestInitLike }> = [];
  reads = new Map<string, Reply | (() => Reply)>();
  private seq = 0;
  fetch: FetchLike = async (url, init) => {
    this.requests.push({ url, init });
    let reply: Reply;
    if (init.method === 'GET') {
      const read = this.reads.get(url);
      reply = (typeof read === 'function' ? read() : read) ?? { status: 404, body: { error: { code: 'not_found', message: 'not found' } } };
    } else {
      const batch = (JSON.parse(init.body ?? '{}') as { batch?: unknown[] }).batch ?? [];
      reply = { status: 202, body: { accepted: batch.length, ids: batch.map(() => `evt-${++this.seq}`) } };
    }
    return { status: reply.status, headers: { get: () => null }, text: async () => JSON.stringify(reply.body) };
  };
  gets(): Array<{ url: string; auth: string | undefined }> {
    return this.requests.filter((r) => r.init.method === 'GET').map((r) => ({ url: r.url, auth: r.init.headers.Authorization }));
  }
}

function progress(balance: number): Progress {
  return {
    userId: 'u1',
    metrics: { lessons: 1 },
    achievements: [],
    streaks: {},
    points: { xp: { balance, level: null } },
    leaderboards: {},
  };
}

function client(gateway: Gateway): Gamify {
  return new Gamify({ apiKey: PK, host: HOST }, { fetch: gateway.fetch, storage: null, window: null, document: null });
}

let container: HTMLDivElement;
let root: Root;

beforeEach(() => {
  container = document.createElement('div');
  document.body.appendChild(container);
  root = createRoot(container);
});

afterEach(() => {
  act(() => root.unmount());
  container.remove();
});

async function render(node: ReactNode): Promise<void> {
  await act(async () => {
    root.render(node);
  });
  await flush();
}

/** Lets fetches answer and React apply what they set. */
async function flush(): Promise<void> {
  await act(async () => {
    for (let i = 0; i < 30; i++) await Promise.resolve();
  });
}

describe('useProgress', () => {
  it('reads nothing without a user token, then with it as a bearer token; again when it changes', async () => {
    const gateway = new Gateway();
    const gamify = client(gateway);
    gamify.identify('u1');
    gateway.reads.set(`${HOST}/v1/users/u1/progress`, () => {
      const token = gateway.requests[gateway.requests.length - 1]?.init.headers.Authorization;
      return { status: 200, body: progress(token === 'Bearer ut_2' ? 200 : 100) };
    });
    const states: Array<ReadState<Progress>> = [];
    function Probe(): ReactNode {
      states.push(useProgress());
      return null;
    }
    const app = (userToken?: string | null): ReactNode => (
      <GamifyProvider client={gamify} userToken={userToken}>
        <Probe />
      </GamifyProvider>
    );

    await render(app(null));
    expect(gateway.gets()).toEqual([]);
    expect(states.at(-1)).toMatchObject({ data: undefined, error: undefined, loading: false });

    await render(app('ut_1'));
    expect(gateway.gets()).toEqual([{ url: `${HOST}/v1/users/u1/progress`, auth: 'Bearer ut_1' }]);
    expect(states.at(-1)?.data?.points.xp?.balance).toBe(100);
    expect(states.at(-1)?.loading).toBe(false);

    const before = states.length;
    await render(app('ut_2'));
    // what was read for another token is never shown for this one
    expect(states.slice(before).some((s) => s.data?.points.xp?.balance === 100)).toBe(false);
    expect(states.at(-1)?.data?.points.xp?.balance).toBe(200);
    expect(gamify.userToken).toBe('ut_2');

    await render(app(null));
    expect(gamify.userToken).toBeUndefined();
    expect(states.at(-1)).toMatchObject({ data: undefined, loading: false });
    expect(gateway.gets()).toHaveLength(2);
  });

  it('reads another user when asked, surfaces failures as GamifyError, and refresh() reads again', async () => {
    const gateway = new Gateway();
    const gamify = client(gateway);
    gateway.reads.set(`${HOST}/v1/users/u2/progress`, { status: 403, body: { error: { code: 'forbidden', message: 'not yours' } } });
    let state: ReadState<Progress> | undefined;
    function Probe(): ReactNode {
      state = useProgress({ userId: 'u2' });
      return null;
    }
    await render(
      <GamifyProvider client={gamify} userToken="ut_1">
        <Probe />
      </GamifyProvider>,
    );
    expect(state?.error?.code).toBe('forbidden');
    expect(state?.error?.status).toBe(403);
    gateway.reads.set(`${HOST}/v1/users/u2/progress`, { status: 200, body: { ...progress(5), userId: 'u2' } });
    await act(async () => state?.refresh());
    await flush();
    expect(state?.error).toBeUndefined();
    expect(state?.data?.userId).toBe('u2');
    expect(gateway.gets()).toHaveLength(2);
  });
});

describe('rewards', () => {
  it('useRewards lists the rewards since mount, dismissible; useProgress reads again after each', async () => {
    const gateway = new Gateway();
    const gamify = client(gateway);
    gamify.identify('u1');
    let balance = 100;
    gateway.reads.set(`${HOST}/v1/users/u1/progress`, () => ({ status: 200, body: progress(balance) }));
    for (const id of ['evt-1', 'evt-2', 'evt-3']) {
      gateway.reads.set(`${HOST}/v1/events/${id}/outcomes?wait=10`, () => {
        balance += 10;
        return { status: 200, body: { eventId: id, status: 'evaluated', awards: [{ ...POINTS, balance }] } };
      });
    }
    let rewards: RewardsState | undefined;
    let progressState: ReadState<Progress> | undefined;
    let track: ReturnType<typeof useTrack> = () => undefined;
    function Toasts(): ReactNode {
      rewards = useRewards();
      return null;
    }
    function Profile(): ReactNode {
      progressState = useProgress();
      track = useTrack();
      return null;
    }
    const app = (toasts: boolean): ReactNode => (
      <StrictMode>
        <GamifyProvider client={gamify} userToken="ut_1">
          <Profile />
          {toasts ? <Toasts /> : null}
        </GamifyProvider>
      </StrictMode>
    );

    await render(app(false));
    expect(progressState?.data?.points.xp?.balance).toBe(100);
    // before useRewards mounts: not listed
    await act(async () => track('lesson_completed', {}, { awaitOutcome: true }));
    await flush();
    expect(progressState?.data?.points.xp?.balance).toBe(110);

    await render(app(true));
    expect(rewards?.rewards).toEqual([]);
    await act(async () => track('lesson_completed', {}, { awaitOutcome: true }));
    await flush();
    await act(async () => track('lesson_completed', {}, { awaitOutcome: true }));
    await flush();
    expect(rewards?.rewards).toEqual([
      { eventId: 'evt-2', awards: [{ ...POINTS, balance: 120 }] },
      { eventId: 'evt-3', awards: [{ ...POINTS, balance: 130 }] },
    ]);
    expect(progressState?.data?.points.xp?.balance).toBe(130);

    await act(async () => rewards?.dismiss(rewards.rewards[0] as NonNullable<typeof rewards>['rewards'][number]));
    expect(rewards?.rewards.map((r) => r.eventId)).toEqual(['evt-3']);
    await act(async () => rewards?.dismissAll());
    expect(rewards?.rewards).toEqual([]);
  });
});

describe('useLeaderboard', () => {
  it('reads a page with the options, again when they change', async () => {
    const gateway = new Gateway();
    const gamify = client(gateway);
    const board = (limit: number): Leaderboard => ({
      key: 'weekly',
      period: { start: '2026-01-05T00:00:00Z', end: '2026-01-12T00:00:00Z' },
      entries: Array.from({ length: limit }, (_, i) => ({ rank: i + 1, userId: `u${i}`, score: 100 - i })),
      nextCursor: 'next',
    });
    gateway.reads.set(`${HOST}/v1/leaderboards/weekly?period=current&limit=2`, { status: 200, body: board(2) });
    gateway.reads.set(`${HOST}/v1/leaderboards/weekly?period=current&limit=3&cursor=next`, { status: 200, body: board(3) });
    let state: ReadState<Leaderboard> | undefined;
    function Board({ limit, cursor }: { limit: number; cursor?: string }): ReactNode {
      state = useLeaderboard('weekly', { period: 'current', limit, cursor });
      return null;
    }
    await render(
      <GamifyProvider client={gamify} userToken="ut_1">
        <Board limit={2} />
      </GamifyProvider>,
    );
    expect(state?.data?.entries).toHaveLength(2);
    await render(
      <GamifyProvider client={gamify} userToken="ut_1">
        <Board limit={2} />
      </GamifyProvider>,
    );
    expect(gateway.gets()).toHaveLength(1);
    await render(
      <GamifyProvider client={gamify} userToken="ut_1">
        <Board limit={3} cursor="next" />
      </GamifyProvider>,
    );
    expect(state?.data?.entries).toHaveLength(3);
    expect(gateway.gets().map((g) => g.auth)).toEqual(['Bearer ut_1', 'Bearer ut_1']);
  });
});

describe('render counts', () => {
  it('a new user token re-renders the components that read with it, not the others', async () => {
    const gateway = new Gateway();
    const gamify = client(gateway);
    gamify.identify('u1');
    gateway.reads.set(`${HOST}/v1/users/u1/progress`, { status: 200, body: progress(1) });
    let trackers = 0;
    let readers = 0;
    const Tracker = memo(function Tracker() {
      trackers++;
      useTrack();
      useRewards();
      return null;
    });
    const Reader = memo(function Reader() {
      readers++;
      useProgress();
      return null;
    });
    const app = (userToken: string, n: number): ReactNode => (
      <GamifyProvider client={gamify} userToken={userToken}>
        <span>{n}</span>
        <Tracker />
        <Reader />
      </GamifyProvider>
    );
    await render(app('ut_1', 0));
    const readersBefore = readers;
    for (let i = 1; i < 4; i++) await render(app('ut_1', i));
    expect(trackers).toBe(1);
    expect(readers).toBe(readersBefore);
    await render(app('ut_2', 5));
    expect(trackers).toBe(1);
    expect(readers).toBeGreaterThan(readersBefore);
  });
});

describe('useTrack', () => {
  it('returns nothing, so an effect written as `() => track(…)` still has no cleanup to call', async () => {
    const gateway = new Gateway();
    const gamify = client(gateway);
    const returned: unknown[] = [];
    function Page(): ReactNode {
      const track = useTrack();
      useEffect(() => track('page_open'), [track]);
      returned.push(track('render'));
      return null;
    }
    await render(
      <GamifyProvider client={gamify}>
        <Page />
      </GamifyProvider>,
    );
    await act(async () => root.render(null)); // unmounting runs the effect's "cleanup"
    expect(returned.every((r) => r === undefined)).toBe(true);
  });
});
