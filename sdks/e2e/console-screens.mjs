// Screenshots of every console screen, at a phone's width (375 px) and a desktop's (1440 px), into
// docs/console/<screen>-<width>.png (or the folder given as the first argument). Run through
// scripts/sdk-test.sh, which starts the platform: `scripts/sdk-test.sh npm run console:screenshots`.
// It makes its own organization (through ADMIN_TOKEN) with data to show: keys, a webhook endpoint,
// two versions of rules, events from a few users, a badge, a ranking, a management token and an
// invitation. Each image is the full page, cut at 1800 px.
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './platform.mjs';
import {
  RULES,
  RULES_V2,
  acceptInvitation,
  bootstrapOrganization,
  createKey,
  createProject,
  createToken,
  createWebhook,
  inviteMember,
  launch,
  newEmail,
  newPassword,
  publishRulesJson,
  reloadUntil,
  track,
  url,
} from './console-setup.mjs';

const OUT = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '../../docs/console'));
const WIDTHS = [
  { width: 1440, height: 900 },
  { width: 375, height: 812 },
];
/** Pages taller than this are cut (a long list says nothing more further down). */
const MAX_HEIGHT = 1800;

const started = Date.now();
mkdirSync(OUT, { recursive: true });
const browser = await launch();
const written = [];

/** The page as it is, at each width in turn: the full page, at most MAX_HEIGHT tall. */
async function shoot(page, name, { reload = true } = {}) {
  for (const [i, size] of WIDTHS.entries()) {
    await page.setViewportSize(size);
    if (reload && i > 0) await page.reload();
    await page.waitForLoadState('load');
    const height = Math.min(await page.evaluate(() => document.documentElement.scrollHeight), MAX_HEIGHT);
    const path = join(OUT, `${name}-${size.width}.png`);
    await page.screenshot({ path, fullPage: true, clip: { x: 0, y: 0, width: size.width, height } });
    written.push(path);
  }
  await page.setViewportSize(WIDTHS[0]);
}

try {
  const context = await browser.newContext({ viewport: WIDTHS[0] });
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept());

  // The data: an organization and its owner, a project with keys, a webhook, rules, events.
  const email = newEmail('olivia');
  const { organizationId, invitationUrl } = await bootstrapOrganization('Acme', email);
  await acceptInvitation(page, invitationUrl, { name: 'Olivia Owner', password: newPassword() });
  const projectId = await createProject(page, organizationId, 'Acme shop');
  const project = (path = '') => `/console/projects/${projectId}${path}`;
  const pk = await createKey(page, { name: 'Website', type: 'publishable', origins: 'https://shop.acme.example' });
  const sk = await createKey(page, { name: 'Backend', type: 'secret' });
  await page.goto(url(project('/webhooks')));
  await createWebhook(page, 'http://127.0.0.1:9/hook');
  await page.goto(url(project('/rules')));
  await publishRulesJson(page, RULES);
  await publishRulesJson(page, RULES_V2);

  const users = ['ada', 'grace', 'linus', 'margaret'];
  let purchase;
  for (const [i, userId] of users.entries()) {
    await track(pk, { event: 'page_view', userId, properties: { path: '/' } });
    for (let n = 0; n < 3 + i; n++) await track(pk, { event: 'product_view', userId, properties: { sku: `sku-${n}` } });
    if (i < 3) {
      const made = await track(sk, { event: 'purchase', userId, properties: { orderId: `o-${i}`, amount: 20 + 15 * i, currency: 'EUR' } });
      purchase ??= made;
    }
  }
  await reloadUntil(page, project('/users/ada'), 'ada has her badges', async (p) =>
    /Window shopper/.test(await p.locator('section[aria-labelledby=badges-heading]').textContent()),
  );
  await reloadUntil(page, project('/leaderboards?key=weekly_xp&period=current'), 'four users ranked', async (p) =>
    (await p.locator('main table tbody tr').count()) === users.length,
  );

  // Signed out.
  const visitor = await browser.newPage({ viewport: WIDTHS[0] });
  await visitor.goto(url('/console/sign-in'));
  await shoot(visitor, 'sign-in');
  await visitor.close();

  await page.goto(url('/console'));
  await shoot(page, 'organizations');
  await page.goto(url(`/console/orgs/${organizationId}`));
  await shoot(page, 'projects');
  await page.goto(url(`/console/orgs/${organizationId}/members`));
  await inviteMember(page, newEmail('dev'), 'developer');
  await shoot(page, 'members', { reload: false });
  await page.goto(url(`/console/orgs/${organizationId}/tokens`));
  await createToken(page, 'CI deploys');
  await shoot(page, 'tokens', { reload: false });
  await page.goto(url(`/console/orgs/${organizationId}/audit`));
  await shoot(page, 'audit');

  await page.goto(url(project()));
  await shoot(page, 'settings');
  await page.goto(url(project('/keys')));
  await createKey(page, { name: 'Staging site', type: 'publishable' });
  await shoot(page, 'keys', { reload: false });

  await page.goto(url(project('/live')));
  await waitFor('the live stream connected', async () => (await page.locator('#live-state').textContent()) === 'connected');
  for (const [i, userId] of users.entries()) {
    const sent = await track(i % 2 ? sk : pk, { event: i % 2 ? 'signup' : 'page_view', userId });
    await page.locator(`#live-rows tr[data-event-id="${sent.id}"]`).waitFor();
  }
  await shoot(page, 'live', { reload: false });

  await page.goto(url(project('/events')));
  await shoot(page, 'events');
  await page.goto(url(project(`/events/${purchase.id}`)));
  await shoot(page, 'event');
  await page.goto(url(project('/analytics')));
  await page.locator('[data-chart][data-drawn]').waitFor();
  await shoot(page, 'analytics');
  await page.goto(url(project('/rules')));
  await shoot(page, 'rules');
  await page.goto(url(project('/rules/versions/2')));
  await shoot(page, 'rules-version');
  await page.goto(url(project('/users/ada')));
  await shoot(page, 'user');
  await page.goto(url(project('/leaderboards?key=weekly_xp&period=current')));
  await shoot(page, 'leaderboards');
  await page.goto(url(project('/webhooks')));
  await shoot(page, 'webhooks');
  await page.click('#webhooks-table a:has-text("Deliveries")');
  await page.waitForURL(/\/webhooks\/[0-9a-f-]{36}$/);
  await reloadUntil(page, new URL(page.url()).pathname, 'deliveries attempted', async (p) => (await p.locator('main section').count()) >= 3);
  await shoot(page, 'deliveries');

  await context.close();
  console.log(`${written.length} screenshots in ${OUT} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
}
