// Generated from libs/common/src/events.rs; do not edit. Regenerate with
//   UPDATE_SDK_CONTRACT=1 cargo test -p gamify-common browser_sdk

/** Events only a server may send, with a secret key (the gateway's built-in list). */
export const TRUSTED_EVENTS: readonly string[] = [
  'purchase',
  'checkout_complete',
  'checkout_success',
  'commission.created',
  'referral_success',
  'user.leveled_up',
  'step.completed',
  'quest.completed',
];
