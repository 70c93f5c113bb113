// kubeprober board, "Failing now": every failing check of every cluster shown, and every
// offline cluster, with its message and since when, at the top of the page, before any click.
'use strict';

(() => {
  const {
    h, badge, when, severity, failing, configErrors, describeError, openButton, since, checkLinks,
    clusterLinks, hasLinks, OFFLINE, GLYPH,
  } = window.kubeprober;

  // Enough to read at a glance; beyond it the by-probe view groups what fails in many places.
  const MAX_ROWS = 50;

  // What is wrong right now, most severe first and, within a severity, the newest first.
  // An offline cluster is one item (its stale results may no longer hold, so they are not
  // listed as failing); a probe file that did not load is one item of its cluster.
  function failingItems(clusters) {
    const items = [];
    for (const cluster of clusters) {
      if (cluster.state === 'Offline') {
        items.push({ kind: 'offline', cluster, rank: OFFLINE, at: cluster.lastSeen });
        continue;
      }
      for (const error of configErrors(cluster)) {
        items.push({ kind: 'config', cluster, error, rank: severity('UNKNOWN'), at: null });
      }
      for (const probe of cluster.probes || []) {
        for (const check of probe.checks || []) {
          if (!failing(check.status)) continue;
          items.push({ kind: 'check', cluster, probe, check, rank: severity(check.status), at: check.lastTransitionTime });
        }
      }
    }
    const time = (item) => Date.parse(item.at) || 0;
    const name = (item) => `${item.cluster.name}/${item.probe ? `${item.probe.namespace}/${item.probe.name}/${item.check.name}` : ''}`;
    return items.sort((a, b) => b.rank - a.rank || time(b) - time(a) || name(a).localeCompare(name(b)));
  }

  function clusterCell(cluster, layer, what) {
    const button = openButton(cluster.name, layer, String(cluster.name));
    button.dataset.key += `\u0000${what}`; // one per row, so focus finds its row again
    return h('td', {},
      button,
      cluster.maintenance ? h('span', { class: 'tag', title: 'its alerts are muted' }, 'maintenance') : null);
  }

  function row(item) {
    const { cluster } = item;
    const links = (list) => (hasLinks() ? h('td', { class: 'links' }, list) : null);
    if (item.kind === 'offline') {
      return h('tr', { class: 'offline', dataset: { cluster: cluster.name } },
        h('td', {}, h('span', { class: 'badge s-offline' }, h('span', { class: 'glyph', 'aria-hidden': 'true' }, GLYPH.Offline), ' Offline')),
        clusterCell(cluster, null, 'offline'),
        h('td', { class: 'what' }, 'agent'),
        h('td', { class: 'message' }, 'Agent offline: its last results may no longer hold.'),
        h('td', {}, h('span', { class: 'since' }, 'last seen ', when(cluster.lastSeen))),
        links(clusterLinks(cluster.name, 'offline')));
    }
    if (item.kind === 'config') {
      return h('tr', { class: 'config', dataset: { cluster: cluster.name } },
        h('td', {}, h('span', { class: 'tag config-tag' }, 'config error')),
        clusterCell(cluster, null, `config ${item.error.file}`),
        h('td', { class: 'what' }, 'probe file'),
        h('td', { class: 'message' }, `${describeError(item.error)} (what ran before keeps running)`),
        h('td', {}, h('span', { class: 'muted' }, '—')),
        links(clusterLinks(cluster.name, 'configError')));
    }
    const { probe, check } = item;
    return h('tr', { class: 'check', dataset: { cluster: cluster.name, probe: `${probe.namespace}/${probe.name}`, check: check.name } },
      h('td', {}, badge(check.status)),
      clusterCell(cluster, probe.layer, `${probe.namespace}/${probe.name}/${check.name}`),
      h('td', { class: 'what' }, h('span', { class: 'probe-name' }, `${probe.namespace}/${probe.name}`), ` · ${check.name}`),
      h('td', { class: 'message' }, String(check.message ?? '')),
      h('td', {}, since(check)),
      links(checkLinks(cluster.name, probe, check)));
  }

  // Draw the section from the clusters shown (the name filter applies here too).
  function renderFailing(section, clusters) {
    const items = failingItems(clusters);
    const table = section.querySelector('table');
    const head = ['Status', 'Cluster', 'What', 'Message', 'Since', ...(hasLinks() ? ['Links'] : [])];
    table.replaceChildren(
      h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, items.slice(0, MAX_ROWS).map(row)));
    table.hidden = items.length === 0;
    section.querySelector('.count').textContent = items.length ? `(${items.length})` : '';
    const note = section.querySelector('.note');
    note.hidden = items.length > 0 && items.length <= MAX_ROWS;
    note.textContent = items.length
      ? `${items.length - MAX_ROWS} more not listed: narrow the filter, or see them grouped in the by-probe view.`
      : 'Nothing is failing.';
    section.classList.toggle('calm', items.length === 0);
  }

  Object.assign(window.kubeprober, { failingItems, renderFailing });
})();
