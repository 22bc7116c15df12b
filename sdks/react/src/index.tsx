/**
 * @gamify/react: one Gamify client per page, handed down through context; hooks that never make
 * their components re-render unless what they return changed: tracking re-renders nothing, and
 * only the components reading progress, a leaderboard or rewards re-render when those arrive.
 */
import {
  Gamify,
  GamifyError,
  type GamifyOptions,
  type Leaderboard,
  type LeaderboardOptions,
  type Progress,
  type Properties,
  type Reward,
  type TrackOptions,
} from '@gamify/core';
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactElement, type ReactNode } from 'react';

export {
  Gamify,
  GamifyError,
  TRUSTED_EVENTS,
  type AchievementAward,
  type Award,
  type GamifyOptions,
  type Leaderboard,
  type LeaderboardEntry,
  type LeaderboardOptions,
  type LeaderboardStanding,
  type LevelAward,
  type OutcomeStatus,
  type Outcomes,
  type OutcomesOptions,
  type Period,
  type PointsAward,
  type PointsState,
  type Progress,
  type Properties,
  type Reward,
  type StreakAward,
  type StreakState,
  type TrackOptions,
  type UnlockedAchievement,
} from '@gamify/core';

export interface GamifyProviderProps extends Omit<Partial<GamifyOptions>, 'userToken'> {
  /** An existing client instead of apiKey/host/…: the provider then uses it as it is. */
  client?: Gamify;
  /**
   * The signed-in user's token (`ut_…`, minted by your server) that `useProgress` and
   * `useLeaderboard` read with; `null` forgets it. Left undefined, the client's own is kept.
   */
  userToken?: string | null;
  children?: ReactNode;
}

const GamifyContext = createContext<Gamify | null>(null);
/** The user token apart from the client: a new token re-renders only the components reading with it. */
const TokenContext = createContext<string | null>(null);

/**
 * Clients by their options. A render may run twice (StrictMode) or a provider remount; the page
 * still gets one client per key, so one queue in localStorage and one set of unload listeners.
 */
const clients = new Map<string, Gamify>();

function clientFor(options: GamifyOptions): Gamify {
  const id = JSON.stringify([options.apiKey, options.host, options.flushAt, options.flushInterval, options.maxQueueSize, options.debug]);
  let client = clients.get(id);
  if (!client) {
    client = new Gamify(options);
    clients.set(id, client);
  }
  return client;
}

export function GamifyProvider({
  client,
  children,
  apiKey,
  host,
  flushAt,
  flushInterval,
  maxQueueSize,
  debug,
  userToken,
}: GamifyProviderProps): ReactElement {
  let value = client;
  if (!value) {
    if (!apiKey) throw new Error('GamifyProvider: pass apiKey (a publishable key, pk_live_…) or client');
    value = clientFor({ apiKey, host, flushAt, flushInterval, maxQueueSize, debug });
  }
  // Applied while rendering (idempotent), so the children's first effects already read with it.
  if (userToken !== undefined && (value.userToken || null) !== (userToken || null)) value.setUserToken(userToken);
  return (
    <GamifyContext.Provider value={value}>
      <TokenContext.Provider value={value.userToken || null}>{children}</TokenContext.Provider>
    </GamifyContext.Provider>
  );
}

/** The page's Gamify client. Throws outside a GamifyProvider. */
export function useGamify(): Gamify {
  const client = useContext(GamifyContext);
  if (!client) throw new Error('useGamify: wrap your app in <GamifyProvider apiKey=…>');
  return client;
}

/**
 * Returns nothing, unlike the client's `track()` (a promise of the event id): so
 * `useEffect(() => track('x'), [track])` keeps returning no cleanup, as it did before `track()`
 * returned a promise. For the id, `useGamify().track(…)`.
 */
export type TrackFunction = (event: string, properties?: Properties, options?: TrackOptions) => void;

/**
 * A `track` function whose identity is stable for the life of the provider's client.
 * `{awaitOutcome: true}` delivers the event's awards to `useRewards` (and refreshes `useProgress`).
 */
export function useTrack(): TrackFunction {
  const client = useGamify();
  return useCallback<TrackFunction>(
    (event, properties, options) => {
      void client.track(event, properties, options);
    },
    [client],
  );
}

/**
 * Tracks `page_view` on mount and whenever `path` changes (pass your router's path); without a
 * path, once per mount with `location.pathname`. Runs once per path, StrictMode included.
 */
export function usePageView(path?: string, properties?: Properties): void {
  const client = useGamify();
  const last = useRef<string | null>(null);
  const props = useRef(properties);
  props.current = properties;
  useEffect(() => {
    const loc = typeof location === 'undefined' ? undefined : location;
    const current = path ?? (loc ? loc.pathname : '/');
    if (last.current === current) return;
    last.current = current;
    void client.track('page_view', { ...props.current, path: current, url: loc ? loc.href : undefined });
  }, [client, path]);
}

/** What a reading hook returns. */
export interface ReadState<T> {
  /** The last answer; kept while a refresh is under way, cleared when what is read changes. */
  data: T | undefined;
  /** Why the last read failed (`user_token_required` never: without a token nothing is read). */
  error: GamifyError | undefined;
  /** A read is under way. */
  loading: boolean;
  /** Reads again. Stable identity. */
  refresh: () => void;
}

interface Answer<T> {
  key: string;
  data?: T;
  error?: GamifyError;
  loading: boolean;
}

/**
 * Reads with the client whenever `key` changes (null: nothing to read), after `refresh()`, and
 * after every reward the client receives.
 */
function useRead<T>(key: string | null, read: (client: Gamify) => Promise<T>): ReadState<T> {
  const client = useGamify();
  const [answer, setAnswer] = useState<Answer<T>>({ key: '', loading: false });
  const [round, setRound] = useState(0);
  const refresh = useCallback(() => setRound((n) => n + 1), []);
  const reader = useRef(read);
  reader.current = read;

  useEffect(() => client.onReward(refresh), [client, refresh]);

  useEffect(() => {
    if (key === null) {
      setAnswer((a) => (a.key === '' && !a.loading ? a : { key: '', loading: false }));
      return;
    }
    let live = true;
    setAnswer((a) => (a.key === key ? { ...a, loading: true } : { key, loading: true }));
    reader.current(client).then(
      (data) => {
        if (live) setAnswer({ key, data, loading: false });
      },
      (error: unknown) => {
        const failure = error instanceof GamifyError ? error : new GamifyError('network_error', String(error));
        if (live) setAnswer((a) => ({ key, data: a.key === key ? a.data : undefined, error: failure, loading: false }));
      },
    );
    return () => {
      live = false;
    };
  }, [client, key, round]);

  const current = answer.key === key && key !== null;
  return useMemo(
    () => ({
      data: current ? answer.data : undefined,
      error: current ? answer.error : undefined,
      // the first render of a new key is loading already: no flash of "nothing"
      loading: key !== null && (!current || answer.loading),
      refresh,
    }),
    [answer, current, key, refresh],
  );
}

export interface UseProgressOptions {
  /** Whose progress; default the identified user (`identify(userId)`, `client.userId`). */
  userId?: string;
}

/**
 * The user's progress, read with the provider's user token (nothing is read without one), again
 * when the token or user changes, and after every reward.
 */
export function useProgress(options?: UseProgressOptions): ReadState<Progress> {
  const client = useGamify();
  const token = useContext(TokenContext);
  const userId = (options && options.userId) || client.userId;
  return useRead(token ? JSON.stringify(['progress', token, userId]) : null, (c) => c.progress(userId));
}

/** One page of a leaderboard, read with the provider's user token; again when an option changes and after every reward. */
export function useLeaderboard(key: string, options?: LeaderboardOptions): ReadState<Leaderboard> {
  const token = useContext(TokenContext);
  const o = options || {};
  const period = o.period instanceof Date ? o.period.toISOString() : o.period;
  const { limit, cursor } = o;
  return useRead(token ? JSON.stringify(['leaderboard', token, key, period, limit, cursor]) : null, (c) =>
    c.leaderboard(key, { period, limit, cursor }),
  );
}

export interface RewardsState {
  /** Rewards received since this component mounted (events tracked with `awaitOutcome`), oldest first. */
  rewards: Reward[];
  /** Removes one reward from the list (e.g. its toast was closed). */
  dismiss: (reward: Reward) => void;
  /** Empties the list. */
  dismissAll: () => void;
}

/** The rewards the client received since mount, for toasts and the like. */
export function useRewards(): RewardsState {
  const client = useGamify();
  const [rewards, setRewards] = useState<Reward[]>([]);
  useEffect(() => client.onReward((reward) => setRewards((list) => list.concat(reward))), [client]);
  const dismiss = useCallback((reward: Reward) => setRewards((list) => list.filter((r) => r !== reward)), []);
  const dismissAll = useCallback(() => setRewards([]), []);
  return useMemo(() => ({ rewards, dismiss, dismissAll }), [rewards, dismiss, dismissAll]);
}
