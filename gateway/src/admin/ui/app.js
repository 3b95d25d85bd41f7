// vxgate's dashboard: reads the admin API (GET /v1/*, /metrics every 2 s; /v1/events as a
// stream) and draws it. Read-only. Every value is inserted as text (textContent, text
// nodes), never as markup. With admin.token_file, the token is asked for once and kept in
// sessionStorage (this tab only), sent as a Bearer header.
'use strict';

(() => {
  const PAGES = ['fleet', 'services', 'containers', 'dns', 'overlay', 'events'];
  const EVERY_MS = 2000;
  const KEEP_SAMPLES = 150; // 5 minutes of metrics at 2 s
  const KEEP_EVENTS = 200;
  const TOKEN_KEY = 'vxgate.token';

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    data: {},
    samples: [], // { t: seconds, m: Map(series key -> value) }
    events: [], // newest first
    filter: '',
    streaming: false,
    lastOk: null,
  };

  class Unauthorized extends Error {}

  // ---- DOM, as text only ----
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids.flat()) {
      if (k === null || k === undefined) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }
  const table = (heads, rows) =>
    el('table', {}, el('thead', {}, el('tr', {}, heads.map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((c) => el('td', {}, c))))));
  const section = (title, ...kids) => el('section', {}, el('h2', { text: title }), ...kids);
  const kv = (k, v) => el('span', { class: 'kv', text: v === undefined ? k : `${k}=${v}` });
  const health = (h) => el('span', { class: h === 'healthy' ? 'ok' : h === 'unhealthy' ? 'bad' : 'muted', text: h });

  // ---- the API ----
  async function get(path, text) {
    const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
    const r = await fetch(path, { headers, cache: 'no-store' });
    if (r.status === 401) throw new Unauthorized();
    if (r.status === 404) return null; // a part that does not run here
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return text ? r.text() : r.json();
  }

  // Prometheus text: a Map from "name{labels}" to value, and the labels of each key
  function parseMetrics(text) {
    const m = new Map();
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const match = /^([A-Za-z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (match) m.set(match[1] + (match[2] || ''), Number(match[4]));
    }
    return m;
  }
  function labelsOf(key) {
    const out = {};
    const i = key.indexOf('{');
    if (i < 0) return out;
    const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let g;
    while ((g = re.exec(key.slice(i)))) out[g[1]] = g[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    return out;
  }
  // the series of `name` whose labels include `want`
  function series(m, name, want) {
    const out = [];
    for (const [key, v] of m) {
      const base = key.split('{')[0];
      if (base !== name) continue;
      const l = labelsOf(key);
      if (Object.entries(want || {}).every(([k, x]) => l[k] === x)) out.push({ labels: l, v });
    }
    return out;
  }
  const sum = (m, name, want) => series(m, name, want).reduce((a, s) => a + s.v, 0);

  // per-sample rates of a counter (a point per pair of samples)
  function rates(name, want) {
    const out = [];
    for (let i = 1; i < state.samples.length; i++) {
      const a = state.samples[i - 1], b = state.samples[i];
      const d = sum(b.m, name, want) - sum(a.m, name, want);
      out.push(Math.max(0, d) / Math.max(0.001, b.t - a.t));
    }
    return out;
  }
  // per-sample quantile of a histogram's observations between two samples (seconds)
  function quantiles(name, want, q) {
    const out = [];
    const buckets = (m) => series(m, `${name}_bucket`, want)
      .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), v: s.v }))
      .sort((x, y) => x.le - y.le);
    for (let i = 1; i < state.samples.length; i++) {
      const a = buckets(state.samples[i - 1].m), b = buckets(state.samples[i].m);
      const d = b.map((x, j) => ({ le: x.le, v: x.v - ((a[j] && a[j].v) || 0) }));
      const total = d.length ? d[d.length - 1].v : 0;
      if (total <= 0) { out.push(null); continue; }
      const hit = d.find((x) => x.v >= q * total);
      out.push(hit ? hit.le : null);
    }
    return out;
  }

  // ---- formatting ----
  const fmtRate = (x) => (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2)) + '/s';
  const fmtSecs = (x) => (x === null || x === undefined || !isFinite(x) ? '—' : x >= 1 ? `${x.toFixed(2)} s` : `${(x * 1000).toFixed(1)} ms`);
  const fmtBits = (bytesPerSec) => {
    const b = bytesPerSec * 8;
    return b >= 1e9 ? `${(b / 1e9).toFixed(2)} Gbit/s` : b >= 1e6 ? `${(b / 1e6).toFixed(1)} Mbit/s` : `${(b / 1e3).toFixed(1)} kbit/s`;
  };
  const fmtBytes = (n) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);
  const last = (xs) => (xs.length ? xs[xs.length - 1] : null);

  // a small line of the last 5 minutes
  function sparkline(values) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('width', '150');
    svg.setAttribute('height', '28');
    svg.setAttribute('viewBox', '0 0 150 28');
    const vs = values.map((v) => (v === null || !isFinite(v) ? 0 : v));
    const max = Math.max(...vs, 1e-9);
    const n = Math.max(vs.length - 1, 1);
    const pts = vs.map((v, i) => `${((i / n) * 150).toFixed(1)},${(27 - (v / max) * 25).toFixed(1)}`);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
    return svg;
  }
  const stat = (label, value, values) =>
    el('div', { class: 'stat' }, el('div', { class: 'muted', text: label }), el('div', { class: 'v', text: value }), values ? sparkline(values) : null);

  // ---- pages ----
  function fleet() {
    const nodes = state.data.nodes || [];
    const enc = state.data.overlay && state.data.overlay.encryption;
    const peerOf = (n) => enc && n.wireguard && enc.peers.find((p) => p.address === n.wireguard.address);
    const vteps = state.data.peers || [];
    const when = (ms) => new Date(ms).toLocaleString();
    const gone = nodes.filter((n) => !n.present);
    return [section('Nodes', table(
      ['node', 'VTEP', 'gateways', 'containers', 'seen', 'encryption', 'session', 'bytes out / in'],
      nodes.filter((n) => n.present).map((n) => {
        const p = peerOf(n);
        const v = vteps.find((x) => x.node === n.name);
        const known = n.self || Boolean(v);
        return [
          [n.name, n.self ? el('span', { class: 'muted', text: ' (this node)' }) : null],
          n.vtep || '—',
          (n.gateways || []).join(', ') || '—',
          String(n.containers),
          n.self ? 'this node' : n.since_ms ? `through etcd, since ${when(n.since_ms)}` : 'through etcd',
          n.wireguard ? `WireGuard ${n.wireguard.address}` : enc ? el('span', { class: 'bad', text: 'no key' }) : 'plain VXLAN',
          n.self ? '—' : p ? el('span', { class: p.session_up ? 'ok' : 'warn', text: p.session_up ? `up, handshake ${Math.round(p.last_handshake_s)} s ago` : 'no session' })
            : el('span', { class: known ? 'ok' : 'muted', text: known ? 'peer (through etcd)' : '—' }),
          p ? `${fmtBytes(p.tx_bytes)} / ${fmtBytes(p.rx_bytes)}` : v ? `${fmtBytes(v.tx_bytes)} / ${fmtBytes(v.rx_bytes)}` : '—',
        ];
      }))),
    gone.length ? section('Nodes that left', table(['node', 'seen since', 'last seen'],
      gone.map((n) => [n.name, when(n.since_ms), el('span', { class: 'bad', text: when(n.last_seen_ms) })]))) : null];
  }

  function certFor(host) {
    const certs = state.data.certificates || [];
    return certs.find((c) => c.names.some((n) => n === host || (n.startsWith('*.') && host.endsWith(n.slice(1)) && !host.slice(0, -n.length + 1).includes('.'))));
  }

  function certText(c) {
    const days = Math.floor((c.not_after * 1000 - Date.now()) / 86400000);
    const until = new Date(c.not_after * 1000).toISOString().slice(0, 10);
    const renew = c.renew_at ? `, renewed from ${new Date(c.renew_at * 1000).toISOString().slice(0, 10)}` : '';
    return el('span', { class: days < 14 ? 'warn' : '', text: `${c.source}, until ${until} (${days} days)${renew}` });
  }

  function services() {
    const list = state.data.services || [];
    if (!list.length) return [section('Services', el('p', { class: 'muted', text: 'No services yet.' }))];
    return list.map((s) => {
      const want = { service: s.name };
      const rps = rates('vxgate_http_requests_total', want);
      const r4 = rates('vxgate_http_requests_total', { service: s.name, class: '4xx' });
      const r5 = rates('vxgate_http_requests_total', { service: s.name, class: '5xx' });
      const p50 = quantiles('vxgate_http_service_seconds', want, 0.5);
      const p99 = quantiles('vxgate_http_service_seconds', want, 0.99);
      const settings = {};
      for (const b of s.backends) for (const [k, v] of Object.entries(b.labels)) if (k.startsWith('vxgate.')) settings[k] = v;
      const routes = (s.routes || []).map((r) => {
        const c = certFor(r.host);
        return [r.host, r.prefix, r.strip_prefix ? 'yes' : 'no',
          c ? certText(c) : el('span', { class: 'muted', text: 'none' })];
      });
      return section(`Service ${s.name}`,
        el('p', {}, el('span', { class: s.serving === s.backends.length ? 'ok' : s.serving ? 'warn' : 'bad', text: `${s.serving} of ${s.backends.length} serving` }),
          ' ', Object.entries(settings).map(([k, v]) => kv(k, v))),
        el('div', { class: 'stats' },
          stat('requests', fmtRate(last(rps) || 0), rps),
          stat('4xx', fmtRate(last(r4) || 0), r4),
          stat('5xx', fmtRate(last(r5) || 0), r5),
          stat('p50', fmtSecs(last(p50)), p50),
          stat('p99', fmtSecs(last(p99)), p99)),
        table(['container', 'address', 'node', 'health', 'ready', 'origin'],
          s.backends.map((b) => [b.name, `${b.ip}:${b.port}`, b.node, health(b.health), b.ready ? 'yes' : 'no', b.origin])),
        routes.length ? table(['route host', 'path', 'strip', 'certificate'], routes) : null);
    });
  }

  function containers() {
    const f = state.filter.toLowerCase();
    const all = state.data.containers || [];
    const shown = all.filter((c) => !f || [c.name, c.ip, c.node, c.origin, c.health,
      ...Object.entries(c.labels).map(([k, v]) => `${k}=${v}`)].some((x) => String(x).toLowerCase().includes(f)));
    const input = el('input', { type: 'search', placeholder: 'filter: name, IP, node, label…', id: 'filter', value: state.filter });
    input.addEventListener('input', () => { state.filter = input.value; render(true); });
    return [section(`Containers (${shown.length} of ${all.length})`, input,
      table(['name', 'IP', 'node', 'origin', 'labels', 'health'],
        shown.map((c) => [c.name, c.ip, c.node, c.origin, Object.entries(c.labels).map(([k, v]) => kv(k, v)), health(c.health)])))];
  }

  function dns() {
    const m = last(state.samples);
    if (!m || !series(m.m, 'vxgate_dns_queries_total').length) return [section('DNS', el('p', { class: 'muted', text: 'No [dns] here.' }))];
    const q = rates('vxgate_dns_queries_total');
    const fwd = rates('vxgate_dns_forwarded_total');
    const fail = rates('vxgate_dns_upstream_failures_total');
    const limited = rates('vxgate_dns_rate_limited_total');
    const p50 = quantiles('vxgate_dns_answer_seconds', {}, 0.5);
    const p99 = quantiles('vxgate_dns_answer_seconds', {}, 0.99);
    const hits = rates('vxgate_dns_cache_hits_total'), misses = rates('vxgate_dns_cache_misses_total');
    const hitRate = hits.map((h, i) => (h + misses[i] > 0 ? h / (h + misses[i]) : null));
    const lastRate = last(hitRate.filter((x) => x !== null));
    const ups = [...new Set(series(m.m, 'vxgate_dns_upstream_seconds_count').map((s) => s.labels.upstream))];
    const upstreams = ups.map((u) => {
      const want = { upstream: u };
      return [u, fmtRate(last(rates('vxgate_dns_upstream_seconds_count', want)) || 0),
        fmtSecs(last(quantiles('vxgate_dns_upstream_seconds', want, 0.5))), fmtSecs(last(quantiles('vxgate_dns_upstream_seconds', want, 0.99)))];
    });
    const rcodes = series(m.m, 'vxgate_dns_responses_total').map((s) => [s.labels.rcode, String(s.v), fmtRate(last(rates('vxgate_dns_responses_total', { rcode: s.labels.rcode })) || 0)]);
    return [section('DNS',
      el('div', { class: 'stats' },
        stat('queries', fmtRate(last(q) || 0), q),
        stat('forwarded', fmtRate(last(fwd) || 0), fwd),
        stat('upstream failures', fmtRate(last(fail) || 0), fail),
        stat('rate limited', fmtRate(last(limited) || 0), limited),
        stat('answer p50', fmtSecs(last(p50)), p50),
        stat('answer p99', fmtSecs(last(p99)), p99),
        stat('cache hits', lastRate === null || lastRate === undefined ? '—' : `${(lastRate * 100).toFixed(0)} %`, hitRate)),
      table(['rcode', 'answers', 'now'], rcodes),
      upstreams.length ? table(['forwarder', 'answers', 'p50', 'p99'], upstreams) : el('p', { class: 'muted', text: 'No upstreams configured.' }),
      el('p', { class: 'muted' }, `refused TCP connections: ${sum(m.m, 'vxgate_dns_tcp_refused_total')}, truncated for budget: ${sum(m.m, 'vxgate_dns_budget_truncated_total')}`))];
  }

  function overlay() {
    const o = state.data.overlay;
    const m = last(state.samples);
    if (!o || !m) return [section('Overlay', el('p', { class: 'muted', text: 'No [overlay] here.' }))];
    const out = [];
    for (const n of o.networks) {
      const dir = (d) => ({ network: n.name, direction: d });
      const bin = rates('vxgate_overlay_bytes_total', dir('rx')), bout = rates('vxgate_overlay_bytes_total', dir('tx'));
      const pin = rates('vxgate_overlay_packets_total', dir('rx')), pout = rates('vxgate_overlay_packets_total', dir('tx'));
      const drops = series(m.m, 'vxgate_overlay_drops_total', { network: n.name }).filter((s) => s.v > 0)
        .map((s) => [s.labels.reason, String(s.v), fmtRate(last(rates('vxgate_overlay_drops_total', { network: n.name, reason: s.labels.reason })) || 0)]);
      out.push(section(`Network ${n.name} (VNI ${n.vni}, MTU ${n.mtu})`,
        el('div', { class: 'stats' },
          stat('in (peers → TAP)', fmtBits(last(bin) || 0), bin), stat('out', fmtBits(last(bout) || 0), bout),
          stat('packets in', fmtRate(last(pin) || 0), pin), stat('packets out', fmtRate(last(pout) || 0), pout)),
        drops.length ? table(['dropped: reason', 'total', 'now'], drops) : el('p', { class: 'muted', text: 'No drops.' })));
    }
    out.push(section('Datapath', el('p', {}, o.description),
      el('p', {}, Object.entries(o.offloads).map(([k, on]) => el('span', { class: `kv ${on ? 'ok' : 'muted'}`, text: k })))));
    const peers = state.data.peers || [];
    const now = (p, d) => last(rates('vxgate_overlay_peer_bytes_total', { peer: p.vtep, direction: d }));
    out.push(section('Peers', table(['VTEP', 'node', 'transport', 'out', 'in', 'out now', 'in now'],
      peers.map((p) => [p.vtep, p.node || '—', p.transport,
        p.tx_packets === null ? fmtBytes(p.tx_bytes) : `${fmtBytes(p.tx_bytes)} (${p.tx_packets} datagrams)`,
        p.rx_packets === null ? fmtBytes(p.rx_bytes) : `${fmtBytes(p.rx_bytes)} (${p.rx_packets} datagrams)`,
        p.transport === 'vxlan' ? fmtBits(now(p, 'tx') || 0) : '—',
        p.transport === 'vxlan' ? fmtBits(now(p, 'rx') || 0) : '—']))));
    if (o.encryption) {
      out.push(section('WireGuard', table(['address', 'endpoint', 'session', 'out', 'in'],
        o.encryption.peers.map((p) => [p.address, p.endpoint, p.session_up ? el('span', { class: 'ok', text: 'up' }) : el('span', { class: 'warn', text: 'down' }), fmtBytes(p.tx_bytes), fmtBytes(p.rx_bytes)]))));
    }
    return out;
  }

  function events() {
    return [section(`Events (last ${state.events.length}, newest first)`,
      state.streaming ? null : el('p', { class: 'warn', text: 'not connected to /v1/events; retrying' }),
      table(['time', 'change', 'container', 'service', 'node', 'detail'],
        state.events.map((e) => [new Date(e.time_ms).toLocaleTimeString(), e.kind, e.container, e.service || '—', e.node, e.detail])))];
  }

  const RENDER = { fleet, services, containers, dns, overlay, events };

  function page() {
    const p = location.hash.replace('#', '');
    return PAGES.includes(p) ? p : 'services';
  }

  function render(keepFocus) {
    const p = page();
    for (const a of document.querySelectorAll('nav a')) a.classList.toggle('current', a.getAttribute('href') === `#${p}`);
    const main = document.getElementById('main');
    const focused = keepFocus && document.activeElement && document.activeElement.id;
    const caret = focused === 'filter' ? document.activeElement.selectionStart : null;
    main.replaceChildren(...RENDER[p]().flat().filter((k) => k !== null && k !== undefined));
    main.dataset.page = p;
    if (focused) {
      const f = document.getElementById(focused);
      if (f) { f.focus(); if (caret !== null) f.setSelectionRange(caret, caret); }
    }
  }

  function setStatus(text, cls) {
    const s = document.getElementById('status');
    s.textContent = text;
    s.className = cls || '';
  }

  // ---- the token ----
  function showLogin(wrong) {
    document.getElementById('login').hidden = false;
    document.getElementById('main').hidden = true;
    document.getElementById('login-error').textContent = wrong ? 'That token was refused.' : '';
    setStatus('sign-in needed', 'warn');
  }
  document.getElementById('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = document.getElementById('token').value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    poll();
  });

  // ---- polling ----
  let timer = null;
  async function poll() {
    clearTimeout(timer);
    try {
      const [services, containers, nodes, overlay, peers, certificates, metrics] = await Promise.all([
        get('/v1/services'), get('/v1/containers'), get('/v1/nodes'), get('/v1/overlay'),
        get('/v1/overlay/peers'), get('/v1/certificates'), get('/metrics', true)]);
      state.data = { services, containers, nodes, overlay, peers, certificates };
      state.samples.push({ t: Date.now() / 1000, m: parseMetrics(metrics) });
      if (state.samples.length > KEEP_SAMPLES + 1) state.samples.shift();
      document.getElementById('login').hidden = true;
      document.getElementById('main').hidden = false;
      state.lastOk = new Date();
      setStatus(`updated ${state.lastOk.toLocaleTimeString()}`, 'ok');
      if (!state.streaming) follow();
      render(true);
    } catch (e) {
      if (e instanceof Unauthorized) {
        const wrong = Boolean(state.token);
        state.token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(wrong);
        return; // until the form is sent
      }
      setStatus(`error: ${e.message}`, 'bad');
    }
    timer = setTimeout(poll, EVERY_MS);
  }

  // ---- /v1/events (Server-Sent Events read through fetch, so the token can be sent) ----
  async function follow() {
    state.streaming = true;
    try {
      const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
      const r = await fetch('/v1/events', { headers, cache: 'no-store' });
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      state.events = []; // the stream starts with the kept ones again
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const msg = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const kind = (/^event: (.*)$/m.exec(msg) || [])[1];
          const data = (/^data: (.*)$/m.exec(msg) || [])[1];
          if (kind === 'registry' && data) {
            state.events.unshift(JSON.parse(data));
            if (state.events.length > KEEP_EVENTS) state.events.pop();
            if (page() === 'events') render(true);
            // a change: fetch the state now rather than at the next tick
            clearTimeout(timer);
            timer = setTimeout(poll, 150);
          }
        }
      }
    } catch (e) {
      // shown on the Events page; the next poll starts it again
    }
    state.streaming = false;
  }

  window.addEventListener('hashchange', () => render(false));
  poll();
})();
