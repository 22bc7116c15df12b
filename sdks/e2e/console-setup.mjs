// What the console's end-to-end tests (console.e2e.mjs) and its screenshots (console-screens.mjs)
// share: the operator's calls that bootstrap an organization (ADMIN_TOKEN), the console's own
// forms driven in Chromium (playwright-core), sending events, and axe-core.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { HOST, env, waitFor } from './platform.mjs';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

/** A console address on the platform under test. */
export const url = (path) => `${HOST()}${path}`;

/** A password the account rules accept: long enough and not a common one. */
export const newPassword = () => `Console-${randomBytes(9).toString('base64url')}`;
export const newEmail = (who) => `${who}-${randomUUID().slice(0, 8)}@example.com`;

/** The operator's call (Bearer ADMIN_TOKEN); fails on anything but a 2xx. */
export async function admin(method, path, body) {
  const response = await fetch(url(path), {
    method,
    headers: { Authorization: `Bearer ${env('ADMIN_TOKEN')}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** An organization made by the operator, and a single-use invitation link to own it. */
export async function bootstrapOrganization(name, email) {
  const organization = await admin('POST', '/v1/organizations', { name });
  const invitation = await admin('POST', `/v1/organizations/${organization.id}/invitations`, { email, role: 'owner' });
  assert.match(invitation.url, /\/console\/invitations\/accept\?token=/);
  return { organizationId: organization.id, invitationUrl: invitation.url };
}

/** Follows an invitation link: sets the password, lands on the organization's projects. */
export async function acceptInvitation(page, invitationUrl, { name, password }) {
  // The link names PUBLIC_URL, which scripts/sdk-test.sh sets to the API's own address.
  await page.goto(invitationUrl);
  await page.fill('#name', name);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(/\/console\/orgs\/[0-9a-f-]{36}$/), page.click('main button[type=submit]')]);
  return new URL(page.url()).pathname.split('/').pop();
}

export async function signIn(page, email, password) {
  await page.goto(url('/console/sign-in'));
  await page.fill('#email', email);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/console/sign-in')), page.click('main button[type=submit]')]);
}

export async function signOut(page) {
  await Promise.all([page.waitForURL(/\/console\/sign-in$/), page.click('#sign-out')]);
}

/** The session's CSRF token, as the page gives it to htmx (`<body hx-headers>`). */
export async function csrfToken(page) {
  const headers = JSON.parse(await page.locator('body').getAttribute('hx-headers'));
  assert.ok(headers['X-CSRF-Token'], 'no CSRF token on the page');
  return headers['X-CSRF-Token'];
}

/** Creates a project on the organization's page; the console goes on to its keys. */
export async function createProject(page, organizationId, name) {
  await page.goto(url(`/console/orgs/${organizationId}`));
  await page.fill('#new-project-name', name);
  await Promise.all([
    page.waitForURL(/\/console\/projects\/[0-9a-f-]{36}\/keys$/),
    page.click('#new-project button[type=submit]'),
  ]);
  return page.url().split('/').at(-2);
}

/** Waits until the element's text is something other than `before` (an htmx swap landed). */
async function newText(page, selector, before, pattern) {
  return waitFor(`${selector} replaced`, async () => {
    const element = page.locator(selector);
    if ((await element.count()) === 0) return null;
    const text = (await element.textContent()).trim();
    return text !== before && pattern.test(text) ? text : null;
  });
}

async function textOrNull(page, selector) {
  const element = page.locator(selector);
  return (await element.count()) === 0 ? null : (await element.textContent()).trim();
}

/** Creates an API key on the keys page (already open); returns the key the page shows once. */
export async function createKey(page, { name, type, origins = '' }) {
  const before = await textOrNull(page, '#revealed-key');
  await page.fill('#new-key-name', name);
  await page.selectOption('#new-key-type', type);
  await page.fill('#new-key-origins', origins);
  await page.click('#new-key button[type=submit]');
  return newText(page, '#revealed-key', before, type === 'secret' ? /^sk_/ : /^pk_/);
}

/** Creates a management token on the tokens page (already open); returns it as shown once. */
export async function createToken(page, name) {
  const before = await textOrNull(page, '#revealed-token');
  await page.fill('#new-token-name', name);
  await page.click('#new-token button[type=submit]');
  return newText(page, '#revealed-token', before, /^gmt_/);
}

/** Invites someone on the members page (already open); returns the link as shown once. */
export async function inviteMember(page, email, role) {
  const before = await textOrNull(page, '#invitation-link');
  await page.fill('#invite-email', email);
  await page.selectOption('#invite-role', role);
  await page.click('#invite button[type=submit]');
  return newText(page, '#invitation-link', before, /\/console\/invitations\/accept\?token=/);
}

/** Adds a webhook endpoint on the webhooks page (already open); returns its signing secret. */
export async function createWebhook(page, endpoint) {
  const before = await textOrNull(page, '#revealed-secret');
  await page.fill('#new-webhook-url', endpoint);
  await page.click('#new-webhook button[type=submit]');
  return newText(page, '#revealed-secret', before, /\S/);
}

/** Opens the rules editor's "Edit as JSON" (open already when it shows a problem). */
export async function openJsonView(page) {
  const details = page.locator('#rules-editor details');
  if (!(await details.evaluate((d) => d.open))) await details.locator('summary').click();
}

/**
 * Publishes a rule document through the rules page's "Edit as JSON" form (the page already open);
 * returns the version number the editor reports.
 */
export async function publishRulesJson(page, rules, apply = 'from_now') {
  const before = await textOrNull(page, '#rules-editor [role=status]');
  await openJsonView(page);
  await page.fill('#rules-json-text', JSON.stringify(rules, null, 2));
  await page.selectOption('#publish-json-apply', apply);
  await page.click('#rules-json button[name=action][value=publish]');
  const status = await newText(page, '#rules-editor [role=status]', before, /Published version \d+/);
  return Number(/Published version (\d+)/.exec(status)[1]);
}

/** POST /v1/events/track with an API key; resolves when answered, with the time of the answer. */
export async function track(key, body) {
  const response = await fetch(url('/v1/events/track'), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'x-api-key': key },
    body: JSON.stringify(body),
  });
  const answeredAt = Date.now();
  const text = await response.text();
  assert.equal(response.status, 202, `track ${body.event}: ${response.status} ${text}`);
  return { ...JSON.parse(text), answeredAt };
}

/**
 * The rules the tests publish: a first purchase unlocks a badge worth 50 xp, xp ranks a weekly
 * board; a second version adds product views.
 */
export const RULES = {
  timezone: 'UTC',
  metrics: [{ key: 'purchases', event: 'purchase', aggregate: 'count' }],
  achievements: [{ key: 'first_purchase', name: 'First purchase', metric: 'purchases', threshold: 1 }],
  points: [{ key: 'xp', name: 'XP', triggers: [{ achievement: 'first_purchase', points: 50 }] }],
  leaderboards: [{ key: 'weekly_xp', points: 'xp', period: 'week', size: 10 }],
};

export const RULES_V2 = {
  ...RULES,
  metrics: [...RULES.metrics, { key: 'product_views', event: 'product_view', aggregate: 'count', source: 'any' }],
  achievements: [...RULES.achievements, { key: 'window_shopper', name: 'Window shopper', metric: 'product_views', threshold: 3 }],
  points: [
    {
      key: 'xp',
      name: 'XP',
      triggers: [
        { achievement: 'first_purchase', points: 50 },
        { metric: 'product_views', points: 1 },
      ],
      levels: [
        { key: 'bronze', at: 0 },
        { key: 'silver', at: 100 },
      ],
    },
  ],
};

/** Reloads `path` until `check(page)` holds (the engine evaluates events asynchronously). */
export async function reloadUntil(page, path, what, check, options) {
  return waitFor(
    what,
    async () => {
      await page.goto(url(path));
      return check(page);
    },
    { timeout: 30_000, interval: 300, ...options },
  );
}

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Runs axe-core on the page as it is (its context must bypass the CSP, which allows no injected
 * script); returns the violations, each with its impact, rule, help and the elements named.
 */
export async function axeViolations(page) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: AXE_SOURCE });
  const results = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ['violations'] }).then((r) =>
      r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
      })),
    ),
  );
  return results;
}
