// kubeprober board, the by-cluster view: clusters worst first, a cell per layer, and the
// drill-down of an opened cluster (its probes and checks, each check with its recent results).
'use strict';

(() => {
  const {
    h, badge, when, shown, statusClass, byWorst, counts, configErrors, describeError, configTag,
    checksTable, clusterLinks, hasLinks, LAYERS, STATES, GLYPH,
  } = window.kubeprober;

  // ``view`` is what board.js passes in: ``expanded`` (cluster name -> layer shown, or null for
  // all layers; absent = collapsed) and ``history(cluster)`` (undefined while being fetched,
  // else {byCheck: Map of "namespace/probe/check" -> results} or {error}).

  function layerCell(view, cluster, layer) {
    const summary = (cluster.layers || {})[layer];
    if (!summary || !summary.total) {
      return h('td', { class: 'layer' }, h('span', { class: 'cell none' }, '—', h('small', {}, 'no checks')));
    }
    const open = view.expanded.has(cluster.name) && view.expanded.get(cluster.name) === layer;
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

  function stateCell(cluster) {
    const state = STATES.includes(cluster.state) ? cluster.state : 'Pending';
    const stale = (cluster.probes || []).some((p) => p.stale);
    return h('td', {},
      h('span', { class: `state state-${state.toLowerCase()}` }, String(cluster.state ?? 'Pending')),
      stale ? h('span', { class: 'tag stale-tag', title: 'results from before the cluster went offline' }, 'stale data') : null,
      cluster.maintenance ? h('span', { class: 'tag', title: 'its alerts are muted' }, 'maintenance') : null,
      configTag(configErrors(cluster)));
  }

  function agentCell(cluster) {
    const facts = [];
    if (cluster.kubernetesVersion) facts.push(`k8s ${cluster.kubernetesVersion}`);
    if (typeof cluster.nodeCount === 'number') facts.push(`${cluster.nodeCount} nodes`);
    return h('td', {}, String(cluster.agentVersion ?? '—'),
      facts.length ? h('small', { class: 'block' }, facts.join(' · ')) : null,
      kubectlCommand(cluster));
  }

  // The one line that writes a kubeconfig reaching the cluster's API through this aggregator,
  // for clusters whose agent accepts the API proxy (docs/security.md says what that grants).
  function kubectlCommand(cluster) {
    if (cluster.apiProxy !== 'read' && cluster.apiProxy !== 'write') return null;
    const file = `${cluster.name}.kubeconfig`;
    const line = `kubeprober kubeconfig --cluster ${cluster.name} --aggregator ${location.origin} ` +
      `--operator-token-file OPERATOR_TOKEN_FILE -o ${file} && export KUBECONFIG=$PWD/${file}`;
    return h('code', { class: 'block kubectl-command', title: `kubectl through the aggregator (${cluster.apiProxy})` }, line);
  }

  function probeSection(cluster, probe, historyOf) {
    const checks = [...(probe.checks || [])].sort((a, b) => byWorst(a, b, (c) => c.name));
    const passed = probe.passed ?? `${checks.filter((c) => c.status === 'PASS').length}/${checks.length}`;
    return h('section', { class: `probe ${probe.stale ? 'stale' : ''}`, dataset: { probe: `${probe.namespace}/${probe.name}` } },
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
      checksTable(cluster.name, probe, checks, historyOf));
  }

  // Where the recent results come from, and why there are none when there are none.
  function historyNote(history) {
    if (history === undefined) return h('p', { class: 'history-note muted' }, 'Fetching recent results from the agent…');
    if (history.error) return h('p', { class: 'history-note muted' }, `Recent results unavailable: ${history.error}`);
    return null;
  }

  function drillDown(view, cluster, layer) {
    const probes = (cluster.probes || [])
      .filter((p) => layer === null || p.layer === layer)
      .sort((a, b) => byWorst(a, b, (p) => `${p.namespace}/${p.name}`));
    const title = layer === null ? 'all layers' : `${layer} layer`;
    const history = view.history(cluster.name);
    const historyOf = (probe, check) => {
      if (history === undefined) return undefined;
      if (history.error) return null;
      return history.byCheck.get(`${probe.namespace}/${probe.name}/${check.name}`) ?? null;
    };
    return h('div', { class: 'drill' },
      h('h3', {}, `${cluster.name}: ${title}`,
        layer === null ? null : h('button', {
          type: 'button', class: 'link',
          dataset: { key: `all\u0000${cluster.name}`, cluster: cluster.name, all: '1' },
        }, 'show all layers'),
        hasLinks()
          ? h('span', { class: 'links' }, clusterLinks(cluster.name, cluster.state === 'Offline' ? 'offline' : null))
          : null),
      cluster.state === 'Offline'
        ? h('p', { class: 'stale-note' }, 'Cluster offline: these are its last results, marked stale; last seen ', when(cluster.lastSeen), '.')
        : null,
      configErrors(cluster).length
        ? h('div', { class: 'config-errors' },
          h('p', { class: 'config-note' }, 'Probe files that did not load (what ran before keeps running):'),
          h('ul', {}, configErrors(cluster).map((e) => h('li', {}, describeError(e)))))
        : null,
      historyNote(history),
      probes.length ? probes.map((p) => probeSection(cluster, p, historyOf)) : h('p', { class: 'muted' }, 'No probes.'));
  }

  function clusterBody(view, cluster, index) {
    const open = view.expanded.has(cluster.name);
    const layer = open ? view.expanded.get(cluster.name) : null;
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
        LAYERS.map((l) => layerCell(view, cluster, l))),
      h('tr', { class: 'detail', id: detailId, hidden: !open },
        h('td', { colspan: 9 }, open ? drillDown(view, cluster, layer) : null)));
  }

  // Draw the clusters (already filtered and ordered) into the table.
  function renderClusters(table, view, clusters) {
    for (const body of table.querySelectorAll('tbody')) body.remove();
    table.append(...clusters.map((c, i) => clusterBody(view, c, i)));
  }

  Object.assign(window.kubeprober, { renderClusters });
})();
