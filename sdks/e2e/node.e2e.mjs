// @gamify/node against the real platform: trusted events with a secret key become processed rows,
// and a purchase sent twice is one row.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { GamifyClient, GamifyValidationError } from '@gamify/node';
import { HOST, PK, SK, events, waitFor } from './platform.mjs';

const run = randomUUID().slice(0, 8);

test('refuses a publishable key and bad arguments before sending', () => {
  assert.throws(() => new GamifyClient({ secretKey: PK(), host: HOST() }), /secret key/);
  const client = new GamifyClient({ secretKey: SK(), host: HOST() });
  assert.throws(() => client.purchase({ userId: 'u', orderId: 'o', amount: 9.99, currency: 'EUR' }), GamifyValidationError);
  assert.equal(client.queued, 0);
});

test('purchase and referral_success become processed rows', async () => {
  const buyer = `buyer-${run}`;
  const client = new GamifyClient({ secretKey: SK(), host: HOST() });
  const purchaseId = client.purchase({ userId: buyer, orderId: `o-${run}`, amount: 4200, currency: 'EUR' });
  const referralId = client.referralSuccess({ referredUserId: buyer, referralCode: `CODE-${run}`, referrerUserId: `referrer-${run}` });
  await client.shutdown();
  const rows = await waitFor('purchase and referral_success processed', async () => {
    const found = await events(SK(), { userId: buyer, status: 'processed' });
    return found.length >= 2 ? found : null;
  });
  const purchase = rows.find((e) => e.event === 'purchase');
  const referral = rows.find((e) => e.event === 'referral_success');
  assert.equal(purchase.messageId, purchaseId);
  assert.deepEqual(purchase.properties, { orderId: `o-${run}`, amount: 4200, currency: 'EUR' });
  assert.equal(purchase.source.keyType, 'secret');
  assert.equal(referral.messageId, referralId);
  assert.equal(referral.properties.referrerUserId, `referrer-${run}`);
});

test('the same purchase sent twice (two clients, as a retrying handler would) is one row', async () => {
  const buyer = `twice-${run}`;
  const order = { userId: buyer, orderId: `o2-${run}`, amount: 1500, currency: 'USD' };
  const first = new GamifyClient({ secretKey: SK(), host: HOST() });
  first.purchase(order);
  await first.flush();
  const second = new GamifyClient({ secretKey: SK(), host: HOST() });
  second.purchase(order);
  second.purchase(order);
  await second.flush();
  // Events of one user keep their order on the broker: once this later one is processed, the
  // duplicates before it have been seen by the worker too.
  second.track({ userId: buyer, event: 'e2e_sentinel' });
  await second.shutdown();
  await first.shutdown();
  const rows = await waitFor('sentinel processed after the duplicates', async () => {
    const found = await events(SK(), { userId: buyer });
    return found.some((e) => e.event === 'e2e_sentinel' && e.status === 'processed') ? found : null;
  });
  const purchases = rows.filter((e) => e.event === 'purchase');
  assert.equal(purchases.length, 1, JSON.stringify(purchases));
  assert.equal(purchases[0].messageId, `purchase:o2-${run}`);
  assert.equal(purchases[0].status, 'processed');
});
