// @vitest-environment happy-dom
import { Gamify, type Properties } from '@gamify/core';
import { StrictMode, act, memo, useState, version, type ReactNode } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GamifyProvider, useGamify, usePageView, useTrack, type TrackFunction } from '../src/index';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const PK = `pk_live_${'ef'.repeat(32)}`;

/** A real client that records track calls instead of sending them. */
class Recorder extends Gamify {
  calls: Array<[string, Properties | undefined]> = [];
  constructor() {
    super({ apiKey: PK }, { fetch: () => new Promise(() => undefined), storage: null, window: null, document: null });
  }
  override track(event: string, properties?: Properties): Promise<string> {
    this.calls.push([event, properties]);
    return Promise.resolve(`evt-${this.calls.length}`);
  }
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

function render(node: ReactNode): void {
  act(() => root.render(node));
}

it(`runs on the React version under test (${process.env.GAMIFY_REACT ?? '19'})`, () => {
  expect(version.split('.')[0]).toBe(process.env.GAMIFY_REACT ?? '19');
});

describe('usePageView', () => {
  function Page({ path }: { path?: string }): ReactNode {
    usePageView(path, { section: 'shop' });
    return null;
  }

  it('tracks page_view once on mount (StrictMode included) and again only when the path changes', () => {
    const client = new Recorder();
    const app = (path: string, extra: number): ReactNode => (
      <StrictMode>
        <GamifyProvider client={client}>
          <Page path={path} key="page" />
          <span>{extra}</span>
        </GamifyProvider>
      </StrictMode>
    );
    render(app('/products', 0));
    expect(client.calls).toEqual([['page_view', expect.objectContaining({ path: '/products', section: 'shop' })]]);
    render(app('/products', 1));
    render(app('/products', 2));
    expect(client.calls).toHaveLength(1);
    render(app('/cart', 3));
    expect(client.calls.map(([, p]) => p?.path)).toEqual(['/products', '/cart']);
  });

  it('without a path uses location.pathname', () => {
    const client = new Recorder();
    history.pushState({}, '', '/from-location');
    render(
      <GamifyProvider client={client}>
        <Page />
      </GamifyProvider>,
    );
    expect(client.calls[0]?.[1]?.path).toBe('/from-location');
  });
});

describe('render counts', () => {
  it('re-rendering the provider and tracking do not re-render consumers', () => {
    const client = new Recorder();
    let consumerRenders = 0;
    const tracks = new Set<TrackFunction>();
    let bump: () => void = () => undefined;
    let click: () => void = () => undefined;

    const Consumer = memo(function Consumer() {
      consumerRenders++;
      const track = useTrack();
      tracks.add(track);
      useGamify();
      usePageView('/products');
      click = () => track('cart_add', { sku: 'tee' });
      return null;
    });

    function App(): ReactNode {
      const [n, setN] = useState(0);
      bump = () => setN((x) => x + 1);
      return (
        <GamifyProvider client={client}>
          <span>{n}</span>
          <Consumer />
        </GamifyProvider>
      );
    }

    render(<App />);
    expect(consumerRenders).toBe(1);
    for (let i = 0; i < 5; i++) act(() => bump());
    for (let i = 0; i < 10; i++) act(() => click());
    expect(consumerRenders).toBe(1);
    expect(tracks.size).toBe(1);
    expect(client.calls.filter(([e]) => e === 'cart_add')).toHaveLength(10);
    expect(client.calls.filter(([e]) => e === 'page_view')).toHaveLength(1);
  });

  it('useTrack keeps its identity across provider re-renders even in non-memo children', () => {
    const client = new Recorder();
    const tracks = new Set<TrackFunction>();
    let renders = 0;
    function Child(): ReactNode {
      renders++;
      tracks.add(useTrack());
      return null;
    }
    for (let i = 0; i < 4; i++) {
      render(
        <GamifyProvider client={client}>
          <Child />
        </GamifyProvider>,
      );
    }
    expect(renders).toBe(4);
    expect(tracks.size).toBe(1);
  });
});

describe('GamifyProvider', () => {
  it('with apiKey gives every render and every provider of the same key one client', () => {
    const seen = new Set<Gamify>();
    function Probe(): ReactNode {
      seen.add(useGamify());
      return null;
    }
    const tree = (
      <StrictMode>
        <GamifyProvider apiKey={PK} host="http://127.0.0.1:9">
          <Probe />
        </GamifyProvider>
        <GamifyProvider apiKey={PK} host="http://127.0.0.1:9">
          <Probe />
        </GamifyProvider>
      </StrictMode>
    );
    render(tree);
    render(tree);
    expect(seen.size).toBe(1);
    const [client] = [...seen];
    expect(client?.apiKey).toBe(PK);
    client?.close();
  });

  it('refuses a secret key like the core client does', () => {
    const errors: unknown[] = [];
    const onError = (e: ErrorEvent): void => {
      errors.push(e.error);
      e.preventDefault();
    };
    window.addEventListener('error', onError);
    const original = console.error;
    console.error = () => undefined;
    try {
      expect(() => render(<GamifyProvider apiKey={`sk_live_${'ef'.repeat(32)}`} />)).toThrow(/secret key/);
    } finally {
      console.error = original;
      window.removeEventListener('error', onError);
    }
  });

  it('useGamify outside a provider says what to do', () => {
    function Lost(): ReactNode {
      useGamify();
      return null;
    }
    const original = console.error;
    console.error = () => undefined;
    try {
      expect(() => render(<Lost />)).toThrow(/GamifyProvider/);
    } finally {
      console.error = original;
    }
  });
});
