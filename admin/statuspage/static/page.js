// The status page's script: live updates and small comforts. The page
// works without it, minus the live updates.
//
// /events (server-sent events) sends "update" events: the ids of the
// page's sections in order, and the HTML of those that changed, rendered
// by the server with the page's own templates. They replace the sections
// on the page; nothing is rendered here.
(function () {
  'use strict';

  // Times are sent in UTC; show them in the browser's zone.
  function localTimes(root) {
    root.querySelectorAll('time.abs[datetime]').forEach(function (t) {
      var d = new Date(t.getAttribute('datetime'));
      if (!isNaN(d)) {
        t.title = t.textContent;
        t.textContent = d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
      }
    });
  }

  // A form posts once: its button says it is at work.
  document.addEventListener('submit', function (e) {
    var b = e.target.querySelector('button[type=submit]');
    if (b) {
      setTimeout(function () { b.disabled = true; }, 0);
      if (b.dataset.busy) b.textContent = b.dataset.busy;
    }
  });

  function apply(main, u) {
    var nodes = u.order.map(function (id) {
      var el = document.getElementById(id);
      var html = u.html[id];
      if (html !== undefined) {
        var t = document.createElement('template');
        t.innerHTML = html;
        var n = t.content.firstElementChild;
        localTimes(n);
        if (el) el.replaceWith(n);
        el = n;
      }
      return el;
    }).filter(Boolean);
    Array.prototype.slice.call(main.children).forEach(function (c) {
      if (nodes.indexOf(c) < 0) c.remove();
    });
    nodes.forEach(function (n, i) {
      if (main.children[i] !== n) main.insertBefore(n, main.children[i] || null);
    });
    var asof = document.getElementById('asof');
    if (asof) {
      asof.setAttribute('datetime', u.now);
      localTimes(asof.parentNode);
    }
  }

  function live() {
    var main = document.getElementById('apps');
    var conn = document.getElementById('conn');
    if (!main || !conn || !window.EventSource) return;
    var es = new EventSource(main.dataset.events);
    es.onopen = function () { conn.dataset.state = 'live'; conn.textContent = 'live'; };
    es.onerror = function () { conn.dataset.state = 'off'; conn.textContent = 'reconnecting…'; };
    es.addEventListener('update', function (ev) { apply(main, JSON.parse(ev.data)); });
  }

  function start() {
    localTimes(document);
    live();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
