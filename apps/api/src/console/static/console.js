// Gamify console: the few behaviours htmx does not cover. No inline scripts (the
// Content-Security-Policy allows scripts from this origin only); everything hooks on data-*.
(function () {
  'use strict';

  function onLoad(root) {
    root.querySelectorAll('[data-chart]').forEach(drawChart);
    root.querySelectorAll('[data-live]').forEach(startLive);
  }

  // Copy buttons: <button data-copy="element-id">.
  document.addEventListener('click', function (event) {
    var button = event.target.closest && event.target.closest('[data-copy]');
    if (!button) return;
    var source = document.getElementById(button.getAttribute('data-copy'));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.textContent = 'Copied';
    });
  });

  // Trend charts: <div data-chart='{"labels":[…],"series":[{"label","values"}]}'>.
  function drawChart(element) {
    if (element.dataset.drawn || typeof uPlot === 'undefined') return;
    element.dataset.drawn = '1';
    var spec = JSON.parse(element.getAttribute('data-chart'));
    var colours = ['#4338ca', '#0e9384', '#c4320a', '#7a5af8', '#dd2590', '#667085'];
    var data = [spec.x];
    var series = [{}];
    spec.series.forEach(function (s, i) {
      data.push(s.values);
      series.push({ label: s.label, stroke: colours[i % colours.length], width: 2 });
    });
    var width = Math.max(280, element.clientWidth - 8);
    new uPlot({ width: width, height: 260, series: series, scales: { x: { time: true } } }, data, element);
  }

  // Live events: an EventSource on the console's own origin (the session cookie authorises it).
  function startLive(element) {
    if (element.dataset.started) return;
    element.dataset.started = '1';
    var rows = element.querySelector('tbody');
    var shownCount = document.getElementById('live-shown');
    var droppedCount = document.getElementById('live-dropped');
    var lagText = document.getElementById('live-lag');
    var state = document.getElementById('live-state');
    var pause = document.getElementById('live-pause');
    var filter = document.getElementById('live-filter');
    var maxRows = 200;
    var paused = false;
    var held = [];
    var dropped = 0;
    var shown = 0;
    var source = null;

    function count() {
      shownCount.textContent = String(shown);
      droppedCount.textContent = String(dropped);
    }
    function insert(html) {
      var body = document.createElement('tbody');
      body.innerHTML = html;
      var row = body.firstElementChild;
      if (!row) return;
      rows.insertBefore(row, rows.firstChild);
      shown += 1;
      while (rows.children.length > maxRows) rows.removeChild(rows.lastChild);
    }
    function connect() {
      if (source) source.close();
      var params = new URLSearchParams();
      var data = new FormData(filter);
      ['event', 'userId'].forEach(function (name) {
        var value = String(data.get(name) || '').trim();
        if (value) params.set(name, value);
      });
      source = new EventSource(element.getAttribute('data-live') + '?' + params.toString());
      source.addEventListener('open', function () { state.textContent = 'connected'; });
      source.addEventListener('error', function () { state.textContent = 'reconnecting…'; });
      source.addEventListener('event', function (message) {
        if (paused) {
          if (held.length < maxRows) held.push(message.data); else dropped += 1;
        } else {
          insert(message.data);
        }
        count();
      });
      source.addEventListener('stats', function (message) {
        var stats = JSON.parse(message.data);
        dropped += stats.dropped;
        if (stats.lagMs !== null) lagText.textContent = (stats.lagMs / 1000).toFixed(2) + ' s';
        count();
      });
    }
    pause.addEventListener('click', function () {
      paused = !paused;
      pause.textContent = paused ? 'Resume' : 'Pause';
      pause.setAttribute('aria-pressed', paused ? 'true' : 'false');
      if (!paused) {
        held.forEach(insert);
        held = [];
        count();
      }
    });
    filter.addEventListener('submit', function (event) {
      event.preventDefault();
      rows.innerHTML = '';
      connect();
    });
    connect();
  }

  // Forms marked data-reset empty themselves once what they sent was accepted (a 2xx: the page's
  // htmx-config swaps refusals too, so htmx's own "successful" is true for them).
  document.addEventListener('htmx:afterRequest', function (event) {
    var form = event.target;
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (form && form.hasAttribute && form.hasAttribute('data-reset') && status >= 200 && status < 300) {
      form.reset();
    }
  });

  document.addEventListener('DOMContentLoaded', function () { onLoad(document); });
  document.addEventListener('htmx:load', function (event) { onLoad(event.target); });
})();
