// The console (/console on gamify-api) in Debian's headless Chromium, driven by playwright-core,
// against the real platform that scripts/sdk-test.sh started (gamify-api with PUBLIC_URL set to its
// own address, gamify-worker, gamify-engine). One person's way through it, each step checked: an
// organization bootstrapped by the operator, its owner invited, a project, keys shown once, live
// events, rules published as JSON, a badge and a ranking earned, a viewer who may not change keys,
// another organization out of sight. axe-core runs on every screen on the way.
//
// The tests run in order and build on each other (node:test runs a file's tests one by one).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HOST, waitFor } from './platform.mjs';
import {
  RULES,
  acceptInvitation,
  admin,
  axeViolations,
  bootstrapOrganization,
  createKey,
  createProject,
  createToken,
  createWebhook,
  csrfToken,
  inviteMember,
  launch,
  newEmail,
  newPassword,
  openJsonView,
  publishRulesJson,
  reloadUntil,
  signIn,
  signOut,
  track,
  url,
} from './console-setup.mjs';

let browser;
/** The owner's browser: bypasses the CSP so that axe-core can be injected (see the CSP test). */
let owner;
let page;
const me = { email: newEmail('owner'), password: newPassword() };
const state = {};
/** Every screen axe-core looked at: its name and the violations found. */
const audited = [];

const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Runs axe-core on the page as it is now, under the name of its screen: at the desktop width, then
 * at a phone's (375 px), where tables scroll and the layout reflows.
 */
async function audit(name, on = page) {
  await on.waitForLoadState('load');
  const path = new URL(on.url()).pathname;
  const size = on.viewportSize();
  audited.push({ name, width: size.width, path, violations: await axeViolations(on) });
  await on.setViewportSize({ width: 375, height: 812 });
  audited.push({ name, width: 375, path, violations: await axeViolations(on) });
  await on.setViewportSize(size);
}

before(async () => {
  browser = await launch();
  owner = await browser.newContext({ bypassCSP: true });
  page = await owner.newPage();
  page.on('dialog', (dialog) => dialog.accept());
});

after(async () => {
  await browser?.close();
});

test('the operator makes an organization and invites its owner, who joins, signs out and signs in again', async () => {
  const { organizationId, invitationUrl } = await bootstrapOrganization(`Console e2e ${Date.now()}`, me.email);
  state.organizationId = organizationId;
  assert.equal(new URL(invitationUrl).origin, HOST(), 'the invitation link is not on PUBLIC_URL');

  await page.goto(invitationUrl);
  await audit('accept invitation');
  const landed = await acceptInvitation(page, invitationUrl, { name: 'Olga Owner', password: me.password });
  assert.equal(landed, organizationId);
  assert.match(await page.locator('header .who').textContent(), new RegExp(`${escapeRegExp(me.email)} · owner`));
  await audit('projects (none yet)');

  await signOut(page);
  // Signed out: a console page sends the browser back to the sign-in form.
  await page.goto(url(`/console/orgs/${organizationId}`));
  assert.equal(new URL(page.url()).pathname, '/console/sign-in');
  await audit('sign-in');

  // A wrong password is refused on the page, a right one lets the owner in.
  await page.fill('#email', me.email);
  await page.fill('#password', `${me.password}x`);
  await page.click('main button[type=submit]');
  await page.locator('main .error[role=alert]').waitFor();
  assert.match(await page.locator('main .error').textContent(), /Wrong email or password/);
  await audit('sign-in (refused)');
  // The form still knows the page that was asked for, and goes there.
  await page.fill('#password', me.password);
  await Promise.all([page.waitForURL(/\/console\/orgs\//), page.click('main button[type=submit]')]);
  assert.equal(new URL(page.url()).pathname, `/console/orgs/${organizationId}`);
  // Signing in from the form itself lands on the organizations.
  await signOut(page);
  await signIn(page, me.email, me.password);
  assert.equal(new URL(page.url()).pathname, '/console');
  assert.ok(await page.locator(`main a[href="/console/orgs/${organizationId}"]`).isVisible());
  await audit('organizations');
});

test('a project made in the console, a publishable and a secret key each shown only once', async () => {
  state.projectId = await createProject(page, state.organizationId, 'Console shop');
  assert.match(await page.locator('main').textContent(), /No keys yet/);

  state.pk = await createKey(page, { name: 'Console website', type: 'publishable' });
  state.sk = await createKey(page, { name: 'Console backend', type: 'secret' });
  assert.match(state.pk, /^pk_live_/);
  assert.match(state.sk, /^sk_live_/);
  assert.equal(await page.locator('#keys-table tbody tr').count(), 2);
  await audit('keys (a key revealed)');

  const keysPath = `/console/projects/${state.projectId}/keys`;
  await page.reload();
  const html = await page.content();
  for (const key of [state.pk, state.sk]) {
    assert.ok(!html.includes(key), 'the keys page shows a key again after a reload');
    // The prefix is listed, the key is not.
    assert.ok(html.includes(`${key.slice(0, 12)}`), `no prefix of ${key.slice(0, 12)} listed`);
  }
  const source = await owner.request.get(url(keysPath));
  assert.equal(source.status(), 200);
  const text = await source.text();
  assert.ok(!text.includes(state.pk) && !text.includes(state.sk), 'a fresh GET of the keys page carries a key');
  assert.match(source.headers()['cache-control'] ?? '', /no-store/);
  await audit('keys');
});

test('the live view shows each event sent with either key within a second of its 202; a row opens its detail', async () => {
  await page.goto(url(`/console/projects/${state.projectId}/live`));
  await waitFor('the live stream connected', async () => (await page.locator('#live-state').textContent()) === 'connected');
  // Times each row's arrival in the table, by the page's clock (the same machine's as this one).
  await page.evaluate(() => {
    window.rowsSeenAt = {};
    new MutationObserver((records) => {
      for (const record of records) {
        for (const node of record.addedNodes) if (node.dataset?.eventId) window.rowsSeenAt[node.dataset.eventId] = Date.now();
      }
    }).observe(document.getElementById('live-rows'), { childList: true });
  });

  const sent = [];
  for (const [key, body] of [
    [state.pk, { event: 'page_view', userId: 'u1', properties: { path: '/' } }],
    [state.sk, { event: 'signup', userId: 'u1', properties: { plan: 'pro' } }],
    [state.pk, { event: 'page_view', userId: 'u2', properties: { path: '/pricing' } }],
  ]) {
    const accepted = await track(key, body);
    const seenAt = await waitFor(`the row of ${accepted.id} in the live view`, () =>
      page.evaluate((id) => window.rowsSeenAt[id], accepted.id),
    );
    sent.push({ ...accepted, event: body.event, lagMs: seenAt - accepted.answeredAt });
  }
  console.log(`live view: row shown after the 202 in ${sent.map((s) => `${s.lagMs} ms (${s.event})`).join(', ')}`);
  for (const s of sent) assert.ok(s.lagMs <= 1000, `${s.event} ${s.id} shown ${s.lagMs} ms after its 202`);

  const row = page.locator(`#live-rows tr[data-event-id="${sent[0].id}"]`);
  assert.match(await row.textContent(), /page_view/);
  assert.match(await row.textContent(), /u1/);
  assert.match(await row.textContent(), /publishable/);
  assert.equal(await page.locator('#live-shown').textContent(), String(await page.locator('#live-rows tr').count()));
  await audit('live (rows shown)');

  // The lists link an event with its occurredAt (`?at=`), which makes the lookup one index probe.
  await Promise.all([page.waitForURL(/\/events\/[0-9a-f-]{36}\?at=[^&]+$/), row.locator('a').click()]);
  assert.equal(new URL(page.url()).pathname, `/console/projects/${state.projectId}/events/${sent[0].id}`);
  assert.equal((await page.locator('main h1').textContent()).trim(), 'page_view');
  const eventJson = await page.locator('pre[aria-label="The event as JSON"]').textContent();
  assert.match(eventJson, new RegExp(sent[0].id));
  assert.match(eventJson, /"userId": "u1"/);
  assert.match(eventJson, /"path": "\/"/);
  const status = await page.locator('dl.stats').textContent();
  assert.match(status, /Status\s*(pending|processed)/);
  assert.match(status, /Console website/);
  assert.match(status, /publishable/);
  await audit('event detail');

  await page.goto(url(`/console/projects/${state.projectId}/events`));
  for (const s of sent) assert.equal(await page.locator(`main a[href*="/events/${s.id}?at="]`).count(), 1, `${s.id} not in the explorer`);
  await audit('events');
});

test('rules published as JSON: a purchase earns the badge, the points and a place on the leaderboard', async () => {
  // A webhook endpoint first, so that the awards make deliveries (to a closed port: they fail).
  await page.goto(url(`/console/projects/${state.projectId}/webhooks`));
  await createWebhook(page, 'http://127.0.0.1:9/hook');
  await audit('webhooks (a secret revealed)');

  const rulesPath = `/console/projects/${state.projectId}/rules`;
  await page.goto(url(rulesPath));
  assert.match(await page.locator('main').textContent(), /No rules published yet/);
  await audit('rules (none yet)');
  // A broken document is refused with its problem next to the field.
  await openJsonView(page);
  await page.fill('#rules-json-text', '{"timezone": "UTC", "metrics": [');
  await page.click('#rules-json button[name=action][value=validate]');
  await page.locator('#rules-json-problem').waitFor();
  assert.equal(await page.locator('#rules-json-text').getAttribute('aria-invalid'), 'true');
  await audit('rules (a JSON problem)');

  const version = await publishRulesJson(page, RULES);
  assert.equal(version, 1);
  await audit('rules (published)');
  await page.goto(url(rulesPath));
  assert.match(await page.locator('main > p').first().textContent(), /Active: version 1/);
  await audit('rules');
  await page.goto(url(`${rulesPath}/versions/1`));
  assert.match(await page.locator('main h1').textContent(), /Rules version 1/);
  assert.match(await page.locator('pre.diff').textContent(), /first_purchase/);
  await audit('rules version');

  state.buyer = `buyer-${Date.now()}`;
  const purchase = await track(state.sk, {
    event: 'purchase',
    userId: state.buyer,
    properties: { orderId: 'o-1', amount: 42, currency: 'EUR' },
  });
  state.purchaseId = purchase.id;

  const userPath = `/console/projects/${state.projectId}/users/${encodeURIComponent(state.buyer)}`;
  await reloadUntil(page, userPath, 'the badge on the user page', async (p) =>
    /First purchase/.test(await p.locator('section[aria-labelledby=badges-heading]').textContent()),
  );
  assert.match(await page.locator('section[aria-labelledby=points-heading]').textContent(), /xp\s*50/);
  await audit('user');
  await page.goto(url(`/console/projects/${state.projectId}/users`));
  await audit('users (find one)');

  const boardPath = `/console/projects/${state.projectId}/leaderboards?key=weekly_xp&period=current`;
  await reloadUntil(page, boardPath, 'the buyer on the leaderboard', async (p) =>
    (await p.locator(`main table a[href$="/users/${encodeURIComponent(state.buyer)}"]`).count()) === 1,
  );
  const ranked = await page.locator('main table tbody tr').first().textContent();
  assert.match(ranked, new RegExp(`1\\s*${state.buyer}\\s*50`));
  await audit('leaderboards');

  // The purchase's own page shows what it earned.
  await reloadUntil(page, `/console/projects/${state.projectId}/events/${state.purchaseId}`, 'the purchase processed', async (p) =>
    /processed/.test(await p.locator('dl.stats').textContent()),
  );
  assert.match(await page.locator('section[aria-labelledby=outcome-heading]').textContent(), /first_purchase/);
  await audit('event detail (awards)');

  await page.goto(url(`/console/projects/${state.projectId}/analytics`));
  await page.locator('[data-chart][data-drawn]').waitFor();
  await audit('analytics');

  // The award was posted to the endpoint, which refused the connection.
  await page.goto(url(`/console/projects/${state.projectId}/webhooks`));
  await audit('webhooks');
  await page.click('#webhooks-table a:has-text("Deliveries")');
  await page.waitForURL(/\/webhooks\/[0-9a-f-]{36}$/);
  const deliveriesPath = new URL(page.url()).pathname;
  await reloadUntil(page, deliveriesPath, 'a delivery attempted', async (p) => (await p.locator('main section').count()) > 0);
  await audit('deliveries');

  await page.goto(url(`/console/projects/${state.projectId}`));
  await audit('settings');
});

test('the organization pages: members with an invitation shown once, tokens shown once, the audit log', async () => {
  await page.goto(url(`/console/orgs/${state.organizationId}`));
  assert.equal(await page.locator(`main a[href="/console/projects/${state.projectId}/events"]`).count(), 1);
  await audit('projects');

  await page.goto(url(`/console/orgs/${state.organizationId}/tokens`));
  const token = await createToken(page, 'CI');
  await audit('tokens (a token revealed)');
  await page.reload();
  assert.ok(!(await page.content()).includes(token), 'the token shown again after a reload');
  await audit('tokens');

  await page.goto(url(`/console/orgs/${state.organizationId}/audit`));
  const log = await page.locator('main table').textContent();
  for (const action of ['organization.created', 'member.joined', 'project.created', 'key.created', 'rules.published', 'webhook.created', 'token.created']) {
    assert.ok(log.includes(action), `${action} not in the audit log`);
  }
  await audit('audit log');
});

test('a viewer invited in the console sees no key controls, and a key posted anyway is refused with 403', async () => {
  await page.goto(url(`/console/orgs/${state.organizationId}/members`));
  const viewerEmail = newEmail('viewer');
  const link = await inviteMember(page, viewerEmail, 'viewer');
  assert.equal(new URL(link).origin, HOST());
  await audit('members (an invitation revealed)');
  await page.reload();
  assert.ok(!(await page.content()).includes(link), 'the invitation link shown again after a reload');
  assert.match(await page.locator('main').textContent(), new RegExp(`Pending invitations[\\s\\S]*${escapeRegExp(viewerEmail)}`));
  await audit('members');

  const viewer = await browser.newContext({ bypassCSP: true });
  try {
    const viewerPage = await viewer.newPage();
    const landed = await acceptInvitation(viewerPage, link, { name: 'Vera Viewer', password: newPassword() });
    assert.equal(landed, state.organizationId);
    assert.match(await viewerPage.locator('header .who').textContent(), /· viewer/);
    // Viewers see projects but may not create them.
    assert.equal(await viewerPage.locator('#new-project').count(), 0);

    const keysPath = `/console/projects/${state.projectId}/keys`;
    await viewerPage.goto(url(keysPath));
    assert.equal(await viewerPage.locator('#keys-table tbody tr').count(), 2, 'the viewer does not see the keys listed');
    assert.equal(await viewerPage.locator('#new-key').count(), 0, 'the viewer has the new-key form');
    assert.equal(await viewerPage.getByRole('button', { name: /Create key|Revoke|Roll/ }).count(), 0, 'the viewer has key controls');
    await audit('keys (viewer)', viewerPage);

    // Posted anyway, with the viewer's session and CSRF token: refused for the role, not the CSRF.
    const form = { name: 'Sneaky', type: 'secret', origins: '' };
    const refused = await viewer.request.post(url(keysPath), { form, headers: { 'X-CSRF-Token': await csrfToken(viewerPage) } });
    assert.equal(refused.status(), 403, await refused.text());
    assert.doesNotMatch(await refused.text(), /sk_live_/);
    const revoke = await viewer.request.post(url(`${keysPath}/00000000-0000-0000-0000-000000000000/revoke`), {
      headers: { 'X-CSRF-Token': await csrfToken(viewerPage) },
    });
    assert.ok([403, 404].includes(revoke.status()), `a viewer's revoke answered ${revoke.status()}`);
    // The same request by the owner goes through, so the 403 above is the role's.
    const allowed = await owner.request.post(url(keysPath), { form: { ...form, name: 'Owner via request' }, headers: { 'X-CSRF-Token': await csrfToken(page) } });
    assert.equal(allowed.status(), 200, await allowed.text());
    assert.match(await allowed.text(), /sk_live_/);
    // Without the CSRF token (and from no origin) even the owner is refused.
    const forged = await owner.request.post(url(keysPath), { form: { ...form, name: 'Forged' } });
    assert.equal(forged.status(), 403);

    await viewerPage.goto(url(keysPath));
    assert.equal(await viewerPage.locator('#keys-table tbody tr').count(), 3);
    assert.ok(!(await viewerPage.content()).includes('Sneaky'));

    // The viewer's other screens: read-only forms, no actions.
    await viewerPage.goto(url(`/console/orgs/${state.organizationId}/members`));
    assert.equal(await viewerPage.locator('#invite').count(), 0);
    await audit('members (viewer)', viewerPage);
    await viewerPage.goto(url(`/console/projects/${state.projectId}`));
    assert.equal(await viewerPage.locator('#settings-name').getAttribute('readonly'), '');
    await audit('settings (viewer)', viewerPage);
    await viewerPage.goto(url(`/console/projects/${state.projectId}/rules`));
    assert.equal(await viewerPage.locator('#rules-json button[value=publish]').count(), 0);
    await audit('rules (viewer)', viewerPage);
    await viewerPage.goto(url(`/console/projects/${state.projectId}/webhooks`));
    assert.equal(await viewerPage.locator('#new-webhook').count(), 0);
    await audit('webhooks (viewer)', viewerPage);
  } finally {
    await viewer.close();
  }
});

test("another organization's pages answer 404", async () => {
  const other = await admin('POST', '/v1/organizations', { name: 'Not yours' });
  const otherProject = await admin('POST', '/v1/projects', { organizationId: other.id, name: 'Their shop' });
  for (const path of [
    `/console/orgs/${other.id}`,
    `/console/orgs/${other.id}/members`,
    `/console/projects/${otherProject.id}`,
    `/console/projects/${otherProject.id}/keys`,
    `/console/projects/${otherProject.id}/events`,
  ]) {
    const response = await page.goto(url(path));
    assert.equal(response.status(), 404, `${path} answered ${response.status()}`);
    const text = await page.locator('main').textContent();
    assert.ok(!text.includes('Not yours') && !text.includes('Their shop'), `${path} names the other organization`);
  }
  await audit('not found');
});

test('every screen loads under its Content-Security-Policy with nothing refused', async () => {
  // The screens above were seen with the CSP bypassed (for axe-core); here as a browser sees them.
  const strict = await browser.newContext({ storageState: await owner.storageState() });
  try {
    const strictPage = await strict.newPage();
    const refused = [];
    strictPage.on('console', (message) => {
      if (/Content.Security.Policy/i.test(message.text())) refused.push(`${strictPage.url()}: ${message.text()}`);
    });
    strictPage.on('pageerror', (error) => refused.push(`${strictPage.url()}: ${error.message}`));
    const paths = [...new Set(audited.filter((s) => !s.name.includes('viewer')).map((s) => s.path))];
    for (const path of paths) {
      const response = await strictPage.goto(url(path));
      assert.match(response.headers()['content-security-policy'] ?? '', /script-src 'self'/, `${path} has no CSP`);
      await strictPage.waitForLoadState('load');
    }
    // The scripts that matter still run: the live stream, the chart.
    await strictPage.goto(url(`/console/projects/${state.projectId}/live`));
    await waitFor('the live stream connected under the CSP', async () => (await strictPage.locator('#live-state').textContent()) === 'connected');
    const accepted = await track(state.pk, { event: 'page_view', userId: 'u4' });
    await strictPage.locator(`#live-rows tr[data-event-id="${accepted.id}"]`).waitFor();
    await strictPage.goto(url(`/console/projects/${state.projectId}/analytics`));
    await strictPage.locator('[data-chart][data-drawn] canvas').waitFor();
    assert.deepEqual(refused, [], `refused by the CSP or failed:\n${refused.join('\n')}`);
    console.log(`CSP: ${paths.length} console paths loaded with nothing refused`);
  } finally {
    await strict.close();
  }
});

test('sign out everywhere ends the session', async () => {
  await page.goto(url('/console'));
  const csrf = await csrfToken(page);
  const response = await owner.request.post(url('/console/sign-out-everywhere'), { headers: { 'X-CSRF-Token': csrf }, maxRedirects: 0 });
  assert.equal(response.status(), 303);
  await page.goto(url('/console'));
  assert.equal(new URL(page.url()).pathname, '/console/sign-in');
});

test('axe-core: no serious or critical accessibility violation on any screen', () => {
  const serious = [];
  for (const screen of audited) {
    for (const v of screen.violations) {
      const line = `${screen.name} at ${screen.width} px (${screen.path}): [${v.impact}] ${v.id}: ${v.help}\n${v.nodes.map((n) => `    ${n.target}: ${n.summary.replace(/\n/g, ' ')}`).join('\n')}`;
      if (v.impact === 'serious' || v.impact === 'critical') serious.push(line);
      else console.log(`axe (${v.impact}): ${line}`);
    }
  }
  const names = [...new Set(audited.map((s) => s.name))];
  console.log(`axe-core looked at ${names.length} screens, each at two widths: ${names.join(', ')}`);
  assert.ok(names.length >= 30, `only ${names.length} screens audited`);
  assert.deepEqual(serious, [], `serious or critical violations:\n${serious.join('\n')}`);
});
