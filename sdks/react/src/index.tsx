/**
 * @gamify/react: one Gamify client per page, handed down through context; hooks that never make
 * their components re-render.
 */
import { Gamify, type GamifyOptions, type Properties } from '@gamify/core';
import { createContext, useCallback, useContext, useEffect, useRef, type ReactElement, type ReactNode } from 'react';

export { Gamify, TRUSTED_EVENTS, type GamifyOptions, type Properties } from '@gamify/core';

export interface GamifyProviderProps extends Partial<GamifyOptions> {
  /** An existing client instead of apiKey/host/…: the provider then uses it as it is. */
  client?: Gamify;
  children?: ReactNode;
}

const GamifyContext = createContext<Gamify | null>(null);

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

export function GamifyProvider({ client, children, apiKey, host, flushAt, flushInterval, maxQueueSize, debug }: GamifyProviderProps): ReactElement {
  let value = client;
  if (!value) {
    if (!apiKey) throw new Error('GamifyProvider: pass apiKey (a publishable key, pk_live_…) or client');
    value = clientFor({ apiKey, host, flushAt, flushInterval, maxQueueSize, debug });
  }
  return <GamifyContext.Provider value={value}>{children}</GamifyContext.Provider>;
}

/** The page's Gamify client. Throws outside a GamifyProvider. */
export function useGamify(): Gamify {
  const client = useContext(GamifyContext);
  if (!client) throw new Error('useGamify: wrap your app in <GamifyProvider apiKey=…>');
  return client;
}

export type TrackFunction = (event: string, properties?: Properties) => void;

/** A `track` function whose identity is stable for the life of the provider's client. */
export function useTrack(): TrackFunction {
  const client = useGamify();
  return useCallback<TrackFunction>((event, properties) => client.track(event, properties), [client]);
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
    client.track('page_view', { ...props.current, path: current, url: loc ? loc.href : undefined });
  }, [client, path]);
}
