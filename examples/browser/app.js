// The example shop's use of the browser SDK. Settings come from the query string
// (?key=pk_live_…&host=http://127.0.0.1:3000[&flushAt=…&flushInterval=…]) or from the setup form,
// and stay in localStorage.
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
    if (logList) log(Array.prototype.join.call(arguments, ' '), 'warn');
  };

  var params = new URLSearchParams(location.search);
  var saved = {};
  try { saved = JSON.parse(localStorage.getItem('gamify-example:config') || '{}'); } catch (e) { saved = {}; }
  var config = {
    key: params.get('key') || saved.key,
    host: params.get('host') || saved.host || 'http://127.0.0.1:3000',
  };

  if (!config.key) {
    var setup = $('#setup');
    setup.hidden = false;
    setup.host.value = config.host;
    setup.addEventListener('submit', function (event) {
      event.preventDefault();
      localStorage.setItem('gamify-example:config', JSON.stringify({ key: setup.key.value.trim(), host: setup.host.value.trim() }));
      location.search = '';
    });
    return;
  }
  localStorage.setItem('gamify-example:config', JSON.stringify(config));

  var options = { apiKey: config.key, host: config.host, debug: true };
  if (params.get('flushAt')) options.flushAt = Number(params.get('flushAt'));
  if (params.get('flushInterval')) options.flushInterval = Number(params.get('flushInterval'));

  var gamify;
  try {
    gamify = new Gamify(options);
  } catch (error) {
    document.body.insertAdjacentHTML('afterbegin', '<p class="warn"></p>');
    document.body.firstChild.textContent = String(error.message);
    return;
  }
  window.gamify = gamify; // for the browser test and for poking around in the console

  $('#shop').hidden = false;
  var cart = 0;

  function track(event, properties) {
    gamify.track(event, properties);
    log('track ' + event + ' ' + JSON.stringify(properties || {}));
  }

  function refresh() {
    $('#who').textContent = gamify.userId ? 'Logged in as ' + gamify.userId : 'Anonymous ' + gamify.anonymousId;
    $('#queued').textContent = String(gamify.queued);
    $('#cart-count').textContent = String(cart);
  }
  setInterval(refresh, 250);

  document.querySelectorAll('.products article').forEach(function (article) {
    var product = { sku: article.dataset.sku, price: Number(article.dataset.price), currency: 'EUR' };
    article.querySelector('.view').addEventListener('click', function () { track('product_view', product); });
    article.querySelector('.add').addEventListener('click', function () {
      cart++;
      track('cart_add', { sku: product.sku, price: product.price, currency: 'EUR', quantity: 1 });
    });
  });

  $('#search').addEventListener('submit', function (event) {
    event.preventDefault();
    track('search', { query: event.target.q.value });
  });
  $('#login').addEventListener('submit', function (event) {
    event.preventDefault();
    gamify.identify(event.target.userId.value, { source: 'example-shop' });
    log('identify ' + event.target.userId.value);
    refresh();
  });
  $('#logout').addEventListener('click', function () { gamify.reset(); log('reset'); refresh(); });
  $('#settings').addEventListener('click', function () {
    localStorage.removeItem('gamify-example:config');
    location.search = '';
  });
  $('#checkout').addEventListener('click', function () { track('checkout_start', { items: cart }); });
  // A purchase is a trusted event: only a server with a secret key may send it (@gamify/node).
  // The browser SDK refuses it and warns; the log shows the warning.
  $('#purchase').addEventListener('click', function () {
    gamify.track('purchase', { orderId: 'o-' + Date.now(), amount: cart * 1000, currency: 'EUR' });
  });
  $('#flush').addEventListener('click', function () { gamify.flush().then(function () { log('flushed'); refresh(); }); });

  track('page_view', { path: location.pathname, title: document.title });
  refresh();
})();
