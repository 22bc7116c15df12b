// What the end-to-end tests share: the platform scripts/sdk-test.sh started (GAMIFY_* variables),
// reads through the API with a secret key, and polling on conditions with deadlines.
import assert from 'node:assert/strict';

export function env(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run the end-to-end tests through scripts/sdk-test.sh`);
  return value;
}

export const HOST = () => env('GAMIFY_HOST');
export const PK = () => env('GAMIFY_PK');
export const SK = () => env('GAMIFY_SK');
export const OTHER_SK = () => env('GAMIFY_OTHER_SK');

/** Polls `check` until it returns a truthy value, or fails after `timeout` ms naming `what`. */
export async function waitFor(what, check, { timeout = 30_000, interval = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      assert.fail(`${what}: not within ${timeout} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** GET /v1/events with a secret key; every page up to `max` events, newest first. */
export async function events(secretKey, query = {}, max = 5000) {
  const all = [];
  let cursor;
  do {
    const params = new URLSearchParams({ limit: '1000', ...query, ...(cursor ? { cursor } : {}) });
    const response = await fetch(`${HOST()}/v1/events?${params}`, { headers: { Authorization: `Bearer ${secretKey}` } });
    assert.equal(response.status, 200, `GET /v1/events: ${response.status} ${await response.clone().text()}`);
    const body = await response.json();
    all.push(...body.data);
    cursor = body.nextCursor;
  } while (cursor && all.length < max);
  return all;
}
