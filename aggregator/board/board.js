// kubeprober status board: polls the unified /status and draws the fleet, worst first.
//
// Plain JavaScript, no framework, no build step: the aggregator ships this file as it is.
// Every string from the document reaches the page through textContent or setAttribute, never
// through innerHTML, so a check message cannot inject markup (the CSP backs this up).
'use strict';

(() => {
  const LAYERS = ['application', 'middleware', 'kubernetes', 'infrastructure'];
  // Roll-up severity (docs/contracts.md): ERROR > WARN > UNKNOWN > INFO > PASS.
  const SEVERITY = { ERROR: 4, WARN: 3, UNKNOWN: 2, INFO: 1, PASS: 0 };
  const BY_SEVERITY = ['ERROR', 'WARN', 'UNKNOWN', 'INFO', 'PASS'];
  // A null status means nothing has a result yet ("pending") or there is nothing to check
  // ("no checks"): not healthy, so it sorts above INFO and PASS, but it is not UNKNOWN.
  const NOTHING = 1.5;
  // A glyph next to the word, so status reads without colour and at a glance.
  const GLYPH = { ERROR: '✖', WARN: '▲', UNKNOWN: '?', INFO: 'i', PASS: '✓', pending: '…', 'no checks': '–' };
  const STATES = ['Online', 'Offline', 'Pending'];

  const params = new URLSearchParams(window.location.search);
  const token = params.get('token');
  const refreshSeconds = Math.max(0.5, Number.parseFloat(params.get('refresh') || '10') || 10);
  // Relative, so the board also works when the aggregator is served under a path prefix.
  const statusUrl = new URL('status', window.location.href).toString();

  // Owned by the refresh loop; read by render and the ticker.
  let lastDoc = null;
  let lastOkAt = null;
  // cluster name -> layer shown in its drill-down, or null for all layers; absent = collapsed.
  const expanded = new Map();

  const $ = (id) => document.getElementById(id);

  // Build an element; strings become text nodes, never markup.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  const known = (status) => Object.hasOwn(SEVERITY, status);
  const severity = (status) => {
    if (status === null || status === undefined) return NOTHING;
    return known(status) ? SEVERITY[status] : SEVERITY.UNKNOWN;
  };
  // The word shown for a status; null is "pending" while checks wait for a result.
  const shown = (status, pending) => status ?? (pending ? 'pending' : 'no checks');
  // Class names come from a fixed list, never from the document.
  const statusClass = (status) => {
    if (status === null || status === undefined) return 's-none';
    return `s-${known(status) ? status.toLowerCase() : 'unknown'}`;
  };
  const byWorst = (a, b, name) =>
    severity(b.status) - severity(a.status) || String(name(a)).localeCompare(String(name(b)));
  // An offline cluster ranks with the most severe, right after ERROR and above WARN: its
  // agent is away and its last results may no longer hold, whatever they say.
  const OFFLINE = 3.5;
  const clusterRank = (c) => (c.state === 'Offline' ? OFFLINE : severity((c.summary || {}).status));

  // A status badge; a null status reads "pending" (``pending`` > 0) or "no checks".
  function badge(status, extra, pending) {
    const text = String(shown(status, pending));
    return h('span', { class: `badge ${statusClass(status)} ${extra || ''}` },
      h('span', { class: 'glyph', 'aria-hidden': 'true' }, GLYPH[text] || '?'), ` ${text}`);
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s ago`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ago`;
    const hours = Math.floor(m / 60);
    return hours < 48 ? `${hours}h ago` : `${Math.floor(hours / 24)}d ago`;
  }

  // An RFC 3339 time as "12s ago", with the exact time on hover and for assistive tech.
  function when(iso) {
    const t = Date.parse(iso);
    if (iso === null || iso === undefined || Number.isNaN(t)) return h('span', { class: 'muted' }, '—');
    return h('time', { datetime: iso, title: iso }, ago(Date.now() - t));
  }

  function duration(seconds) {
    if (typeof seconds !== 'number') return '—';
    return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
  }

  // "1 ERROR · 2 PASS · 1 pending": the counts behind a roll-up, worst first, zeros left out.
  // An offline cluster's counts are of its stale results, and say so.
  function counts(summary, stale) {
    const by = (summary && summary.byStatus) || {};
    // No-break spaces keep "1 ERROR" together when a narrow cell wraps.
    const parts = BY_SEVERITY.filter((s) => by[s] > 0).map((s) => `${by[s]}\u00a0${s}`);
    if (summary && summary.pending > 0) parts.push(`${summary.pending}\u00a0pending`);
    if (!parts.length) return 'no checks';
    return `${stale ? 'last: ' : ''}${parts.join(' · ')}`;
  }

  function layerCell(cluster, layer) {
    const summary = (cluster.layers || {})[layer];
    if (!summary || !summary.total) {
      return h('td', { class: 'layer' }, h('span', { class: 'cell none' }, '—', h('small', {}, 'no checks')));
    }
    const open = expanded.has(cluster.name) && expanded.get(cluster.name) === layer;
    const tally = counts(summary, cluster.state === 'Offline');
    const word = shown(summary.status, summary.pending);
    return h('td', { class: 'layer' },
      h('button', {
        type: 'button',
        class: `cell ${statusClass(summary.status)}`,
        'aria-expanded': String(open),
        'aria-label': `${cluster.name} ${layer}: ${word}, ${tally}`,
        dataset: { key: `layer\u0000${cluster.name}\u0000${layer}`, cluster: cluster.name, layer },
      },
      h('span', { class: 'glyph', 'aria-hidden': 'true' }, GLYPH[word] || '?'),
      ` ${word}`, h('small', {}, tally)));
  }

  // Probe files (or Probes in them) the agent could not load; what ran before keeps running.
  // Agents that predate the field send none.
  const configErrors = (cluster) => (Array.isArray(cluster.configErrors) ? cluster.configErrors : []);
  const describeError = (e) => `${e.file ?? '?'}: ${e.message ?? ''}`;

  function configTag(errors) {
    if (!errors.length) return null;
    const text = errors.length === 1 ? 'config error' : `${errors.length} config errors`;
    return h('span', { class: 'tag config-tag', title: errors.map(describeError).join('\n') }, text);
  }

  function stateCell(cluster) {
    const state = STATES.includes(cluster.state) ? cluster.state : 'Pending';
    const stale = (cluster.probes || []).some((p) => p.stale);
    return h('td', {},
      h('span', { class: `state state-${state.toLowerCase()}` }, String(cluster.state ?? 'Pending')),
      stale ? h('span', { class: 'tag stale-tag', title: 'results from before the cluster went offline' }, 'stale data') : null,
      configTag(configErrors(cluster)));
  }

  function agentCell(cluster) {
    const facts = [];
    if (cluster.kubernetesVersion) facts.push(`k8s ${cluster.kubernetesVersion}`);
    if (typeof cluster.nodeCount === 'number') facts.push(`${cluster.nodeCount} nodes`);
    return h('td', {}, String(cluster.agentVersion ?? '—'),
      facts.length ? h('small', { class: 'block' }, facts.join(' · ')) : null);
  }

  function checkRow(check) {
    const failing = check.status !== 'PASS';
    return h('tr', { class: failing ? 'failing' : 'passing' },
      h('td', {}, badge(check.status, '', 1)),
      h('th', { scope: 'row' }, String(check.name ?? '')),
      h('td', { class: 'message' }, String(check.message ?? '')),
      h('td', { class: 'num' }, check.consecutiveFailures ? String(check.consecutiveFailures) : ''),
      h('td', { class: 'num' }, duration(check.durationSeconds)),
      h('td', {}, when(check.lastRun)));
  }

  function probeSection(probe) {
    const checks = [...(probe.checks || [])].sort((a, b) => byWorst(a, b, (c) => c.name));
    const passed = probe.passed ?? `${checks.filter((c) => c.status === 'PASS').length}/${checks.length}`;
    return h('section', { class: `probe ${probe.stale ? 'stale' : ''}` },
      h('h4', {}, badge(probe.status, '', 1), ' ',
        h('span', { class: 'probe-name' }, `${probe.namespace ?? ''}/${probe.name ?? ''}`),
        h('span', { class: 'tag' }, String(probe.layer ?? '')),
        h('span', { class: 'muted' }, ` ${passed} passed · last run `), when(probe.lastRun),
        probe.stale ? h('span', { class: 'tag stale-tag' }, 'stale') : null,
        probe.configError ? configTag([probe.configError]) : null),
      probe.message ? h('p', { class: 'probe-message' }, String(probe.message)) : null,
      probe.configError
        ? h('p', { class: 'config-note' }, `Runs its previous version: ${describeError(probe.configError)}`)
        : null,
      h('table', { class: 'checks' },
        h('thead', {}, h('tr', {},
          ['Status', 'Check', 'Message', 'Failures', 'Duration', 'Last run'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, checks.map(checkRow))));
  }

  function drillDown(cluster, layer) {
    const probes = (cluster.probes || [])
      .filter((p) => layer === null || p.layer === layer)
      .sort((a, b) => byWorst(a, b, (p) => `${p.namespace}/${p.name}`));
    const title = layer === null ? 'all layers' : `${layer} layer`;
    return h('div', { class: 'drill' },
      h('h3', {}, `${cluster.name}: ${title}`,
        layer === null ? null : h('button', {
          type: 'button', class: 'link',
          dataset: { key: `all\u0000${cluster.name}`, cluster: cluster.name, all: '1' },
        }, 'show all layers')),
      cluster.state === 'Offline'
        ? h('p', { class: 'stale-note' }, 'Cluster offline: these are its last results, marked stale; last seen ', when(cluster.lastSeen), '.')
        : null,
      configErrors(cluster).length
        ? h('div', { class: 'config-errors' },
          h('p', { class: 'config-note' }, 'Probe files that did not load (what ran before keeps running):'),
          h('ul', {}, configErrors(cluster).map((e) => h('li', {}, describeError(e)))))
        : null,
      probes.length ? probes.map(probeSection) : h('p', { class: 'muted' }, 'No probes.'));
  }

  function clusterBody(cluster, index) {
    const open = expanded.has(cluster.name);
    const layer = open ? expanded.get(cluster.name) : null;
    const summary = cluster.summary || {};
    const detailId = `detail-${index}`;
    const offline = cluster.state === 'Offline';
    return h('tbody', { class: `cluster ${offline ? 'stale' : ''}`, dataset: { cluster: cluster.name } },
      h('tr', { class: 'row' },
        h('th', { scope: 'row' },
          h('button', {
            type: 'button', class: 'name', 'aria-expanded': String(open), 'aria-controls': detailId,
            dataset: { key: `cluster\u0000${cluster.name}`, cluster: cluster.name },
          }, h('span', { class: 'chevron', 'aria-hidden': 'true' }, open ? '▾' : '▸'), ` ${cluster.name}`)),
        h('td', {}, badge(summary.status, '', summary.pending), h('small', { class: 'block' }, counts(summary, offline))),
        stateCell(cluster),
        h('td', {}, when(cluster.lastSeen)),
        agentCell(cluster),
        LAYERS.map((l) => layerCell(cluster, l))),
      h('tr', { class: 'detail', id: detailId, hidden: !open },
        h('td', { colspan: 9 }, open ? drillDown(cluster, layer) : null)));
  }

  function visibleClusters(doc) {
    const needle = $('filter').value.trim().toLowerCase();
    const problemsOnly = $('problems').checked;
    return [...(doc.clusters || [])]
      .filter((c) => !needle || String(c.name).toLowerCase().includes(needle))
      .filter((c) => !problemsOnly || c.state !== 'Online' || configErrors(c).length
        || clusterRank(c) > SEVERITY.INFO)
      .sort((a, b) => clusterRank(b) - clusterRank(a) || String(a.name).localeCompare(String(b.name)));
  }

  function renderFleet(doc) {
    const clusters = doc.clusters || [];
    const states = STATES.map((s) => `${clusters.filter((c) => c.state === s).length} ${s}`);
    const summary = doc.summary || {};
    const status = shown(summary.status, summary.pending);
    $('fleet').replaceChildren(badge(summary.status, 'big', summary.pending), ' ',
      h('span', {}, `${clusters.length} clusters (${states.join(', ')})`), ' · ',
      h('span', {}, `checks: ${counts(doc.summary)}`), ' · generated ',
      h('time', { datetime: doc.generatedAt ?? '' }, String(doc.generatedAt ?? '—')));
    document.title = `${status} · kubeprober fleet`;
  }

  // Redraw everything from lastDoc, keeping keyboard focus on the same control.
  function render() {
    if (!lastDoc) return;
    const focusKey = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.key : undefined;
    renderFleet(lastDoc);
    const table = document.querySelector('table.clusters');
    for (const body of table.querySelectorAll('tbody')) body.remove();
    const clusters = visibleClusters(lastDoc);
    table.append(...clusters.map(clusterBody));
    const empty = $('empty');
    empty.hidden = clusters.length > 0;
    empty.textContent = (lastDoc.clusters || []).length ? 'No cluster matches the filter.' : 'No clusters registered.';
    if (focusKey) {
      const again = [...table.querySelectorAll('button')].find((b) => b.dataset.key === focusKey);
      if (again) again.focus();
    }
    document.body.dataset.generatedAt = lastDoc.generatedAt ?? '';
  }

  function toggle(button) {
    const name = button.dataset.cluster;
    const layer = button.dataset.layer ?? null;
    if (button.dataset.all) expanded.set(name, null);
    else if (expanded.has(name) && expanded.get(name) === layer) expanded.delete(name);
    else expanded.set(name, layer);
    render();
  }

  function showError(text) {
    const banner = $('banner');
    // The age of the data is in the ticker next to the title, which keeps counting.
    const kept = lastOkAt ? ' Showing the last data received.' : ' No data yet.';
    const message = `Could not refresh status: ${text}.${kept}`;
    // Re-setting the same text would make screen readers announce the alert again.
    if (banner.hidden || banner.dataset.reason !== text) {
      banner.dataset.reason = text;
      banner.textContent = message;
    }
    banner.hidden = false;
    document.body.dataset.fetch = 'error';
  }

  function tick() {
    $('updated').textContent = lastOkAt ? `updated ${ago(Date.now() - lastOkAt)}` : 'not updated yet';
  }

  async function refresh() {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), Math.max(5000, refreshSeconds * 1000));
    try {
      const response = await fetch(statusUrl, { headers, cache: 'no-store', credentials: 'same-origin', signal: abort.signal });
      if (!response.ok) {
        const hint = response.status === 401 || response.status === 403 ? ' (open the board as /?token=<read token>)' : '';
        throw new Error(`HTTP ${response.status} ${response.statusText}${hint}`);
      }
      const doc = await response.json();
      if (!doc || !Array.isArray(doc.clusters)) throw new Error('the document has no clusters list');
      lastDoc = doc;
      lastOkAt = Date.now();
      $('banner').hidden = true;
      document.body.dataset.fetch = 'ok';
      render();
    } catch (err) {
      showError(err.name === 'AbortError' ? 'timed out' : String(err.message || err));
    } finally {
      clearTimeout(timer);
      tick();
      // Scheduled after completion, so a slow aggregator never has requests piling up.
      setTimeout(refresh, refreshSeconds * 1000);
    }
  }

  function start() {
    document.querySelector('table.clusters').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-cluster]');
      if (button) toggle(button);
    });
    $('filter').addEventListener('input', render);
    $('problems').addEventListener('change', render);
    setInterval(tick, 1000);
    refresh();
  }

  start();
})();
