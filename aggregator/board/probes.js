// kubeprober board, the by-probe view: one row per probe across the clusters shown, with the
// clusters where it fails, so one expiring certificate on forty clusters is one row.
'use strict';

(() => {
  const {
    h, badge, severity, failing, listedStatus, openButton, statusClass, GLYPH, shown, SEVERITY,
  } = window.kubeprober;

  // Chips beyond this are counted, not drawn: the filter narrows the clusters.
  const MAX_CHIPS = 50;

  // Probes by namespace/name, each with its entry in every cluster that runs it.
  function probeGroups(clusters) {
    const groups = new Map();
    for (const cluster of clusters) {
      for (const probe of cluster.probes || []) {
        const key = `${probe.namespace}/${probe.name}`;
        if (!groups.has(key)) {
          groups.set(key, { key, layer: probe.layer, entries: [] });
        }
        groups.get(key).entries.push({ cluster: cluster.name, probe, status: listedStatus(probe) });
      }
    }
    for (const group of groups.values()) {
      group.entries.sort((a, b) => severity(b.status) - severity(a.status) || a.cluster.localeCompare(b.cluster));
      group.bad = group.entries.filter((e) => failing(e.status));
      // The worst status among the clusters that have one; null while all are pending.
      group.status = group.entries.find((e) => e.status !== null && e.status !== undefined)?.status ?? null;
    }
    return [...groups.values()].sort((a, b) =>
      severity(b.status) - severity(a.status) || b.bad.length - a.bad.length || a.key.localeCompare(b.key));
  }

  function chip(entry, layer) {
    const word = String(shown(entry.status, 1));
    return openButton(entry.cluster, layer,
      h('span', { class: 'glyph', 'aria-hidden': 'true' }, GLYPH[word] || '?'),
      ` ${entry.cluster}`,
      h('span', { class: 'visually-hidden' }, ` ${word}${entry.probe.stale ? ' (stale)' : ''}`));
  }

  function clustersCell(group) {
    const good = group.entries.filter((e) => e.status === 'PASS' || e.status === 'INFO').length;
    const pending = group.entries.filter((e) => e.status === null || e.status === undefined).length;
    const tally = [`${group.bad.length} of ${group.entries.length} failing`];
    if (good) tally.push(`${good} passing`);
    if (pending) tally.push(`${pending} pending`);
    const chips = group.bad.slice(0, MAX_CHIPS).map((e) => {
      const el = chip(e, group.layer);
      el.classList.add('chip', statusClass(e.status));
      if (e.probe.stale) el.classList.add('stale');
      if (e.probe.message) el.title = String(e.probe.message);
      return el;
    });
    const more = group.bad.length > MAX_CHIPS ? h('span', { class: 'muted' }, ` +${group.bad.length - MAX_CHIPS} more`) : null;
    return h('td', { class: 'where' }, h('div', { class: 'chips' }, chips, more), h('small', { class: 'block' }, tally.join(' · ')));
  }

  function row(group) {
    const worst = group.bad[0];
    const message = worst && worst.probe.message ? `${worst.cluster}: ${worst.probe.message}` : '';
    const pending = group.entries.some((e) => e.status === null || e.status === undefined);
    return h('tr', { class: group.bad.length ? 'failing' : 'passing', dataset: { probe: group.key } },
      h('td', {}, badge(group.status, '', pending)),
      h('th', { scope: 'row' }, h('span', { class: 'probe-name' }, group.key), h('span', { class: 'tag' }, String(group.layer ?? ''))),
      clustersCell(group),
      h('td', { class: 'message' }, message));
  }

  // Draw the view from the clusters shown; "problems only" leaves out the probes that are
  // PASS or INFO everywhere.
  function renderProbes(table, clusters, problemsOnly) {
    const groups = probeGroups(clusters).filter((g) => !problemsOnly || severity(g.status) > SEVERITY.INFO);
    table.replaceChildren(
      h('thead', {}, h('tr', {}, ['Status', 'Probe', 'Clusters', 'Message'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, groups.map(row)));
    return groups.length;
  }

  Object.assign(window.kubeprober, { probeGroups, renderProbes });
})();
