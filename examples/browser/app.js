// The example shop's use of the browser SDK (window.Gamify, from gamify.min.js).
//
// Settings: the query string (?key=pk_live_…&host=…[&flushAt=…&flushInterval=…]), else what the
// shop's server hands out (/api/config: its publishable key, and the API forwarded through its own
// origin), else the setup form (kept in localStorage).
//
// Gamification: a signed-in user gets a user token from the shop's server (/api/token), with which
// the SDK reads the user's progress and the weekly leaderboard. "Pay" asks the server to send the
// trusted purchase event (/api/purchase, secret key), then long-polls the event's outcomes and shows
// a toast per award. Product views of a signed-in user are tracked with {awaitOutcome: true}: what
// they earn comes through onReward.
(function () {
  'use strict';
  var $ = function (selector) { return document.querySelector(selector); };
  var logList = $('#log');

  function log(text, cls) {
    var item = document.createElement('li');
    item.textContent = new Date().toLocaleTimeString() + '  ' + text;
    if (cls) item.className = cls;
    logList.insertBefore(item, logList.firstChild);
  }

  // Show the SDK's warnings (e.g. a trusted event refused) on the page, not only in the console.
  var warn = console.warn;
  console.warn = function () {
    warn.apply(console, arguments);
    log(Array.prototype.join.call(arguments, ' '), 'warn');
  };

  var params = new URLSearchParams(location.search);
  var saved = {};
  try { saved = JSON.parse(localStorage.getItem('gamify-example:config') || '{}'); } catch (e) { saved = {}; }

  fetch('/api/config', { cache: 'no-store' })
    .then(function (response) { return response.ok ? response.json() : {}; })
    .catch(function () { return {}; })
    .then(start);

  function start(server) {
    var fromQuery = !!params.get('key');
    var fromServer = !fromQuery && !!server.publishableKey;
    var config = {
      key: params.get('key') || server.publishableKey || saved.key,
      host: params.get('host') ||
        (fromServer || (server.sameOriginApi && !saved.host) ? location.origin : saved.host || 'http://127.0.0.1:3000'),
    };

    if (!config.key) {
      var setup = $('#setup');
      $('#setup-page').hidden = false;
      setup.host.value = config.host;
      setup.addEventListener('submit', function (event) {
        event.preventDefault();
        localStorage.setItem('gamify-example:config', JSON.stringify({ key: setup.key.value.trim(), host: setup.host.value.trim() }));
        location.search = '';
      });
      return;
    }
    if (!fromServer) localStorage.setItem('gamify-example:config', JSON.stringify(config));

    var options = { apiKey: config.key, host: config.host, debug: true };
    if (params.get('flushAt')) options.flushAt = Number(params.get('flushAt'));
    if (params.get('flushInterval')) options.flushInterval = Number(params.get('flushInterval'));

    var gamify;
    try {
      gamify = new Gamify(options);
    } catch (error) {
      var message = document.createElement('p');
      message.className = 'warn';
      message.setAttribute('role', 'alert');
      message.textContent = String(error.message);
      document.body.insertBefore(message, document.body.firstChild);
      return;
    }
    window.gamify = gamify; // for the browser test and for poking around in the console
    shop(gamify, server, fromServer);
  }

  function shop(gamify, server, keyFromServer) {
    $('#account').hidden = false;
    $('#layout').hidden = false;
    $('#log-section').hidden = false;
    $('#settings').hidden = keyFromServer;

    var cart = [];
    var levels = (server.levels || []).slice().sort(function (a, b) { return a.at - b.at; });
    var badges = server.achievements || [];

    function cartTotal() {
      return cart.reduce(function (sum, item) { return sum + item.price; }, 0);
    }

    function refresh() {
      $('#who').textContent = gamify.userId ? 'Signed in as ' + gamify.userId : 'Not signed in (anonymous ' + gamify.anonymousId.slice(0, 8) + '…)';
      $('#login').hidden = !!gamify.userId;
      $('#logout').hidden = !gamify.userId;
      $('#queued').textContent = String(gamify.queued);
      $('#cart-count').textContent = String(cart.length);
      $('#cart-total').textContent = String(cartTotal());
    }
    setInterval(refresh, 250);

    function cartStatus(text) { $('#cart-status').textContent = text; }

    // --- rewards: toasts ----------------------------------------------------------------------

    function words(key) {
      var text = String(key).replace(/[_-]+/g, ' ');
      return text.charAt(0).toUpperCase() + text.slice(1);
    }

    function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

    function awardText(award) {
      switch (award.type) {
        case 'achievement': return 'Badge unlocked: ' + award.name;
        case 'points': return (award.amount >= 0 ? '+' : '') + award.amount + ' ' + (award.key === 'xp' ? 'XP' : words(award.key)) + ' (now ' + award.balance + ')';
        case 'level': return 'Level up: ' + words(award.level);
        case 'streak': return award.change === 'broken'
          ? words(award.key) + ' streak ended'
          : words(award.key) + ' streak: ' + plural(award.length, 'day', 'days');
        default: return 'You earned something: ' + (award.key || award.type);
      }
    }

    function toast(text) {
      var item = document.createElement('div');
      item.className = 'toast';
      item.textContent = text;
      $('#toasts').appendChild(item);
      setTimeout(function () { item.remove(); }, 8000);
    }

    function showAwards(awards) {
      awards.forEach(function (award) {
        toast(awardText(award));
        log('earned: ' + awardText(award));
      });
    }

    // --- progress and leaderboard -------------------------------------------------------------

    var token = null; // {userId, expiresAt}

    // A user token for the signed-in user, from the shop's server (it holds the secret key).
    function ensureToken(force) {
      var userId = gamify.userId;
      if (!userId) return Promise.resolve(false);
      if (!force && token && token.userId === userId && gamify.userToken && token.expiresAt - Date.now() > 60000) {
        return Promise.resolve(true);
      }
      return fetch('/api/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ userId: userId }),
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (!response.ok || !body.token) {
            throw new Error((body.error && body.error.message) || 'no user token (' + response.status + ')');
          }
          if (gamify.userId !== userId) return false; // signed out meanwhile
          gamify.setUserToken(body.token);
          token = { userId: userId, expiresAt: Date.parse(body.expiresAt) || Date.now() + 3600000 };
          return true;
        });
      });
    }

    // A read with the user token: once more with a new token when the gateway refuses it.
    function withToken(read) {
      return ensureToken(false).then(function (ok) {
        if (!ok) return null;
        return read().catch(function (error) {
          if (error && error.status === 401) return ensureToken(true).then(function () { return read(); });
          throw error;
        });
      });
    }

    var generation = 0;
    var refreshing = null;
    var again = false;

    // Reads progress and the leaderboard and renders them; calls made meanwhile run once after it.
    function refreshProgress() {
      if (refreshing) { again = true; return refreshing; }
      var mine = ++generation;
      refreshing = loadProgress(mine).then(function () {
        refreshing = null;
        if (again) { again = false; return refreshProgress(); }
      });
      return refreshing;
    }

    function loadProgress(mine) {
      var status = $('#progress-status');
      if (!gamify.userId) {
        $('#progress').hidden = true;
        status.textContent = 'Sign in to collect XP, badges and a daily shopping streak.';
        $('#leaderboard-me').textContent = '';
        return loadLeaderboard(null, mine);
      }
      if (!server.purchases) {
        $('#progress').hidden = true;
        status.textContent = 'Progress needs the shop server with a secret key (./scripts/dev.sh starts it so).';
        return Promise.resolve();
      }
      var userId = gamify.userId;
      return withToken(function () { return gamify.progress(userId); })
        .then(function (progress) {
          if (mine !== generation || !progress) return;
          status.textContent = '';
          renderProgress(progress);
          return loadLeaderboard(progress, mine);
        })
        .catch(function (error) {
          if (mine !== generation) return;
          status.textContent = 'Could not read your progress: ' + error.message;
        });
    }

    function renderProgress(progress) {
      $('#progress').hidden = false;
      var xp = (progress.points && progress.points.xp) || { balance: 0, level: null };
      $('#xp-balance').textContent = String(xp.balance);
      $('#level').textContent = xp.level ? words(xp.level) : '–';

      var next = null;
      var current = { at: 0 };
      levels.forEach(function (level) {
        if (level.at <= xp.balance) current = level;
        else if (!next) next = level;
      });
      $('#next-level').hidden = !next;
      if (next) {
        $('#next-level-text').textContent = (next.at - xp.balance) + ' XP to ' + words(next.key);
        $('#level-progress').max = next.at - current.at;
        $('#level-progress').value = xp.balance - current.at;
      }

      var streak = progress.streaks && (progress.streaks.daily_shopping || progress.streaks[Object.keys(progress.streaks)[0]]);
      $('#streak').textContent = streak ? plural(streak.length, 'day', 'days') : '–';
      $('#streak-detail').textContent = !streak
        ? 'Buy something to start a daily shopping streak.'
        : (streak.extendedToday ? 'You shopped today. ' : streak.length ? 'Shop today to keep your streak. ' : '') +
          'Best: ' + plural(streak.longest, 'day', 'days') + '. Freezes left this month: ' + streak.freezesLeft + '.';

      var unlocked = {};
      (progress.achievements || []).forEach(function (a) { unlocked[a.key] = a; });
      var all = badges.slice();
      (progress.achievements || []).forEach(function (a) {
        if (!all.some(function (b) { return b.key === a.key; })) all.push({ key: a.key, name: a.name });
      });
      var list = $('#badges');
      list.textContent = '';
      if (!all.length) {
        var none = document.createElement('li');
        none.textContent = 'No badges yet.';
        list.appendChild(none);
      }
      all.forEach(function (badge) {
        var item = document.createElement('li');
        var got = unlocked[badge.key];
        item.className = got ? 'unlocked' : 'locked';
        item.dataset.key = badge.key;
        item.textContent = badge.name + (got ? ' (unlocked ' + new Date(got.unlockedAt).toLocaleDateString() + ')' : ' (not yet)');
        list.appendChild(item);
      });
    }

    function day(iso) {
      return new Date(iso).toLocaleDateString(undefined, { day: 'numeric', month: 'short', timeZone: 'UTC' });
    }

    function loadLeaderboard(progress, mine) {
      var list = $('#leaderboard');
      if (!progress) {
        list.textContent = '';
        $('#leaderboard-period').textContent = gamify.userId ? '' : 'Sign in to see the leaderboard.';
        return Promise.resolve();
      }
      return withToken(function () { return gamify.leaderboard('weekly_xp', { limit: 10 }); })
        .then(function (board) {
          if (mine !== generation || !board) return;
          $('#leaderboard-period').textContent = 'Week of ' + day(board.period.start) + ' to ' + day(new Date(Date.parse(board.period.end) - 1).toISOString()) + ' (UTC)';
          list.textContent = '';
          var listed = false;
          board.entries.forEach(function (entry) {
            var item = document.createElement('li');
            item.value = entry.rank;
            var me = entry.userId === gamify.userId;
            listed = listed || me;
            item.textContent = entry.userId + (me ? ' (you)' : '') + ': ' + entry.score + ' XP';
            if (me) {
              item.className = 'me';
              item.setAttribute('aria-current', 'true');
            }
            list.appendChild(item);
          });
          if (!board.entries.length) {
            var empty = document.createElement('li');
            empty.textContent = 'No one has earned XP this week yet.';
            list.appendChild(empty);
          }
          var standing = progress.leaderboards && progress.leaderboards.weekly_xp;
          $('#leaderboard-me').textContent = !listed && standing && standing.rank
            ? 'You: #' + standing.rank + ' with ' + standing.score + ' XP'
            : '';
        })
        .catch(function (error) {
          if (mine !== generation) return;
          $('#leaderboard-period').textContent = 'Could not read the leaderboard: ' + error.message;
        });
    }

    // Awards of events tracked with {awaitOutcome: true} (product views of a signed-in user).
    gamify.onReward(function (reward) {
      showAwards(reward.awards);
      refreshProgress();
    });

    // What an event earned: long-polls its outcomes (up to 10 s a request) while it is pending.
    function outcomeOf(eventId) {
      var attempt = 0;
      function next() {
        attempt++;
        return gamify.outcomes(eventId, { wait: 10 }).then(
          function (outcomes) {
            return outcomes.status === 'pending' && attempt < 4 ? next() : outcomes;
          },
          function (error) {
            var status = error && error.status;
            if (attempt >= 4 || (status && status !== 404 && status !== 408 && status !== 429 && status < 500)) throw error;
            return new Promise(function (resolve) { setTimeout(resolve, 1000 * attempt); }).then(next);
          },
        );
      }
      return next();
    }

    // --- the shop -----------------------------------------------------------------------------

    function track(event, properties) {
      // A signed-in user's events can earn something: sent at once, their outcomes awaited.
      var awaitOutcome = !!gamify.userId;
      gamify.track(event, properties, awaitOutcome ? { awaitOutcome: true } : undefined);
      log('track ' + event + ' ' + JSON.stringify(properties || {}));
    }

    document.querySelectorAll('.products article').forEach(function (article) {
      var product = { sku: article.dataset.sku, name: article.dataset.name, price: Number(article.dataset.price), currency: 'EUR' };
      article.querySelector('.view').addEventListener('click', function () {
        track('product_view', { sku: product.sku, price: product.price, currency: 'EUR' });
      });
      article.querySelector('.add').addEventListener('click', function () {
        cart.push(product);
        cartStatus(product.name + ' added to the cart.');
        track('cart_add', { sku: product.sku, price: product.price, currency: 'EUR', quantity: 1 });
        refresh();
      });
    });

    $('#search').addEventListener('submit', function (event) {
      event.preventDefault();
      track('search', { query: event.target.q.value });
    });
    $('#login').addEventListener('submit', function (event) {
      event.preventDefault();
      var userId = event.target.userId.value.trim();
      if (!userId) return;
      gamify.identify(userId, { source: 'example-shop' });
      log('identify ' + userId);
      token = null;
      generation++; // what is still being read belongs to the previous user
      refresh();
      refreshProgress();
    });
    $('#logout').addEventListener('click', function () {
      gamify.reset();
      token = null;
      generation++;
      log('reset');
      refresh();
      refreshProgress();
    });
    $('#settings').addEventListener('click', function () {
      localStorage.removeItem('gamify-example:config');
      location.search = '';
    });
    $('#checkout').addEventListener('click', function () { track('checkout_start', { items: cart.length }); });

    // The purchase: the shop's server sends it with the secret key; this page then waits for what
    // it earned.
    $('#purchase').addEventListener('click', function () {
      var button = $('#purchase');
      var userId = gamify.userId;
      if (!userId) { cartStatus('Sign in to pay: purchases count for a signed-in user.'); return; }
      if (!cart.length) { cartStatus('Your cart is empty: add a product first.'); return; }
      if (!server.purchases) { cartStatus('The shop server has no secret key, so it cannot send purchases.'); return; }
      var amount = cartTotal();
      button.disabled = true;
      cartStatus('Paying ' + amount + ' EUR…');
      fetch('/api/purchase', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ userId: userId, amount: amount }),
      })
        .then(function (response) {
          return response.json().catch(function () { return {}; }).then(function (body) {
            if (response.status !== 202 || !body.id) {
              throw new Error((body.error && body.error.message) || 'the purchase was not accepted (' + response.status + ')');
            }
            return body.id;
          });
        })
        .then(function (eventId) {
          cart = [];
          refresh();
          cartStatus('Paid ' + amount + ' EUR. Thank you!');
          log('purchase of ' + amount + ' EUR sent by the shop server: event ' + eventId);
          return outcomeOf(eventId);
        })
        .then(function (outcomes) {
          if (outcomes.awards && outcomes.awards.length) showAwards(outcomes.awards);
          else log('the purchase earned nothing (' + outcomes.status + ')');
          return refreshProgress();
        })
        .catch(function (error) {
          cartStatus('Payment failed: ' + error.message);
          log('purchase failed: ' + error.message, 'warn');
        })
        .then(function () { button.disabled = false; });
    });
    // A purchase is a trusted event: the browser SDK refuses it and warns; the log shows the warning.
    $('#purchase-browser').addEventListener('click', function () {
      gamify.track('purchase', { orderId: 'o-' + Date.now(), amount: cartTotal(), currency: 'EUR' });
    });
    $('#flush').addEventListener('click', function () { gamify.flush().then(function () { log('flushed'); refresh(); }); });

    // Purchases made elsewhere (another tab, curl) show up too.
    document.addEventListener('visibilitychange', function () {
      if (document.visibilityState === 'visible') refreshProgress();
    });
    setInterval(function () {
      if (document.visibilityState === 'visible' && gamify.userId) refreshProgress();
    }, 30000);

    track('page_view', { path: location.pathname, title: document.title });
    refresh();
    refreshProgress();
  }
})();
