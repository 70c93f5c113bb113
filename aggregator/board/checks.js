// kubeprober board, one check: since when it is in its status, its recent results as a strip,
// its links (Grafana panel, runbook), and its row in a cluster's drill-down.
'use strict';

(() => {
  const { h, badge, when, duration, statusClass, failing, SEVERITY } = window.kubeprober;

  // URL templates of aggregator/board/links.py, written into the page by the aggregator:
  // {checkPanel, clusterDashboard, runbooks: {ERROR, UNKNOWN, offline, configError}}, each
  // present only when the aggregator was given the base URL it needs.
  const LINKS = (() => {
    const meta = document.querySelector('meta[name="kubeprober-links"]');
    try {
      return JSON.parse(meta ? meta.content : '{}') || {};
    } catch {
      return {};
    }
  })();

  // Fill a template's {name} slots, each value percent-encoded.
  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(String(values[name] ?? '')));

  function link(href, text, label) {
    // A new tab keeps the board (and its state) open; no referrer carries the read token.
    return h('a', { href, class: 'out', target: '_blank', rel: 'noopener noreferrer', 'aria-label': label }, text);
  }

  // Links for a check of a cluster: its Grafana panel, and the runbook of the alert its
  // status raises (none for WARN: no check alert pages on it).
  function checkLinks(cluster, probe, check) {
    const names = { cluster, namespace: probe.namespace, probe: probe.name, check: check.name };
    const what = `${cluster} ${probe.namespace}/${probe.name} ${check.name}`;
    const runbook = (LINKS.runbooks || {})[probe.stale ? 'offline' : check.status];
    return [
      LINKS.checkPanel ? link(fill(LINKS.checkPanel, names), 'graph', `Grafana panel of ${what}`) : null,
      runbook ? link(runbook, 'runbook', `runbook for ${what}`) : null,
    ].filter(Boolean);
  }

  // Links for a cluster as a whole: its dashboard, and a runbook for what is wrong with it.
  function clusterLinks(cluster, problem) {
    const runbook = (LINKS.runbooks || {})[problem];
    return [
      LINKS.clusterDashboard
        ? link(fill(LINKS.clusterDashboard, { cluster }), 'dashboard', `Grafana dashboard of ${cluster}`) : null,
      runbook ? link(runbook, 'runbook', `runbook for ${cluster}`) : null,
    ].filter(Boolean);
  }

  const hasLinks = () => Boolean(LINKS.checkPanel || LINKS.runbooks);

  // "since 12m ago": when the check took its current status (lastTransitionTime).
  function since(check) {
    if (!check.lastTransitionTime) return h('span', { class: 'muted' }, '—');
    return h('span', { class: 'since' }, failing(check.status) ? 'failing since ' : 'since ', when(check.lastTransitionTime));
  }

  // The last results, oldest first, one tick each: colour, and height for those who do not
  // see colour (failing ticks are full height); the exact result on hover. ``history`` is
  // undefined while it is being fetched and null when the agent could not give it.
  function strip(history) {
    if (!Array.isArray(history)) {
      return h('span', { class: 'muted' }, history === undefined ? '…' : '—');
    }
    if (!history.length) return h('span', { class: 'muted' }, 'none yet');
    const tally = new Map();
    for (const r of history) tally.set(r.status, (tally.get(r.status) || 0) + 1);
    const parts = [...tally].sort((a, b) => (SEVERITY[b[0]] ?? 2) - (SEVERITY[a[0]] ?? 2)).map(([s, n]) => `${n} ${s}`);
    const label = `last ${history.length} results, oldest first: ${parts.join(', ')}`;
    return h('span', { class: 'strip', role: 'img', 'aria-label': label, title: label },
      history.map((r) => h('span', {
        class: `tick ${statusClass(r.status)} ${failing(r.status) ? 'bad' : 'good'}`,
        title: `${r.startedAt} ${r.status}${r.message ? `: ${r.message}` : ''} (${duration(r.durationSeconds)})`,
      })));
  }

  const CHECK_COLUMNS = ['Status', 'Check', 'Message', 'Since', 'Recent', 'Failures', 'Duration', 'Last run'];

  // One check of a probe in a cluster's drill-down.
  function checkRow(cluster, probe, check, history) {
    return h('tr', { class: failing(check.status) ? 'failing' : 'passing', dataset: { check: check.name } },
      h('td', {}, badge(check.status, '', 1)),
      h('th', { scope: 'row' }, String(check.name ?? '')),
      h('td', { class: 'message' }, String(check.message ?? '')),
      h('td', {}, since(check)),
      h('td', { class: 'recent' }, strip(history)),
      h('td', { class: 'num' }, check.consecutiveFailures ? String(check.consecutiveFailures) : ''),
      h('td', { class: 'num' }, duration(check.durationSeconds)),
      h('td', {}, when(check.lastRun)),
      hasLinks() ? h('td', { class: 'links' }, checkLinks(cluster, probe, check)) : null);
  }

  // A check with targets (probe.targets) is one row: its worst status and "198/200 PASS";
  // its failing targets (named <check>/<target>) follow it, the passing ones are only counted.
  function targetRows(cluster, probe, checks, historyOf) {
    const groups = new Map((Array.isArray(probe.targets) ? probe.targets : []).map((t) => [t.check, []]));
    const rows = [];
    for (const check of checks) {
      const name = String(check.name ?? '');
      const members = name.includes('/') ? groups.get(name.slice(0, name.indexOf('/'))) : undefined;
      if (members) members.push(check);
      else rows.push(checkRow(cluster, probe, check, historyOf(probe, check)));
    }
    const columns = CHECK_COLUMNS.length + (hasLinks() ? 1 : 0);
    for (const targets of probe.targets || []) {
      const members = groups.get(targets.check) || [];
      const ran = members.filter((c) => c.status !== null && c.status !== undefined);
      const worst = ran.reduce((w, c) => (w === null || (SEVERITY[c.status] ?? 2) > (SEVERITY[w] ?? 2) ? c.status : w), null);
      const good = ran.filter((c) => !failing(c.status)).length;
      const notes = [members.length ? `${good}/${members.length} PASS` : 'no targets'];
      if (targets.leftOut) notes.push(`${targets.leftOut} more left out (over the cap)`);
      if (targets.message) notes.push(String(targets.message));
      rows.push(h('tr', { class: `group ${failing(worst) ? 'failing' : 'passing'}`, dataset: { check: targets.check } },
        h('td', {}, badge(worst, '', members.length - ran.length)),
        h('th', { scope: 'row' }, String(targets.check ?? '')),
        h('td', { class: 'message', colspan: String(columns - 2) }, notes.join('; '))));
      for (const check of members.filter((c) => failing(c.status))) {
        const row = checkRow(cluster, probe, check, historyOf(probe, check));
        row.classList.add('target');
        rows.push(row);
      }
    }
    return rows;
  }

  function checksTable(cluster, probe, checks, historyOf) {
    const columns = hasLinks() ? [...CHECK_COLUMNS, 'Links'] : CHECK_COLUMNS;
    return h('table', { class: 'checks' },
      h('thead', {}, h('tr', {}, columns.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, targetRows(cluster, probe, checks, historyOf)));
  }

  Object.assign(window.kubeprober, { checkLinks, clusterLinks, hasLinks, since, strip, checkRow, checksTable });
})();
