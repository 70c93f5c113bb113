// kubeprober board, shared vocabulary: building elements, statuses, times and counts.
//
// The board's scripts are plain files loaded in order (dom, checks, failing, probes, clusters,
// board), each adding what it offers to window.kubeprober; no build step, no framework.
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
  // An offline cluster ranks with the most severe, right after ERROR and above WARN: its
  // agent is away and its last results may no longer hold, whatever they say.
  const OFFLINE = 3.5;
  // A glyph next to the word, so status reads without colour and at a glance.
  const GLYPH = {
    ERROR: '✖', WARN: '▲', UNKNOWN: '?', INFO: 'i', PASS: '✓', pending: '…', 'no checks': '–', Offline: '○',
  };
  const STATES = ['Online', 'Offline', 'Pending'];

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
  const clusterRank = (c) => (c.state === 'Offline' ? OFFLINE : severity((c.summary || {}).status));
  // ERROR, WARN and UNKNOWN are what someone on call looks at; INFO and PASS are fine.
  const failing = (status) => status === 'ERROR' || status === 'WARN' || status === 'UNKNOWN'
    || (typeof status === 'string' && !known(status));
  // A stale probe's status may no longer hold: it counts as UNKNOWN, as /status filters it.
  const listedStatus = (probe) => (probe.stale ? 'UNKNOWN' : probe.status);

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

  // Probe files (or Probes in them) the agent could not load; what ran before keeps running.
  // Agents that predate the field send none.
  const configErrors = (cluster) => (Array.isArray(cluster.configErrors) ? cluster.configErrors : []);
  const describeError = (e) => `${e.file ?? '?'}: ${e.message ?? ''}`;

  function configTag(errors) {
    if (!errors.length) return null;
    const text = errors.length === 1 ? 'config error' : `${errors.length} config errors`;
    return h('span', { class: 'tag config-tag', title: errors.map(describeError).join('\n') }, text);
  }

  // A button that opens a cluster in the cluster view (board.js listens for data-open).
  function openButton(cluster, layer, ...children) {
    return h('button', {
      type: 'button', class: 'open',
      dataset: { open: cluster, layer: layer ?? '', key: `open\u0000${cluster}\u0000${layer ?? ''}` },
    }, ...children);
  }

  window.kubeprober = {
    LAYERS, SEVERITY, OFFLINE, GLYPH, STATES,
    h, known, severity, shown, statusClass, byWorst, clusterRank, failing, listedStatus,
    badge, ago, when, duration, counts, configErrors, describeError, configTag, openButton,
  };
})();
