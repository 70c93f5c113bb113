// kubeprober board, the page: polls the unified /status, keeps the view's state in the URL,
// fetches an opened cluster's recent results, and draws the failing list and the chosen view.
'use strict';

(() => {
  const {
    h, badge, shown, ago, counts, clusterRank, configErrors, renderFailing, renderProbes,
    renderClusters, SEVERITY,
  } = window.kubeprober;

  const params = new URLSearchParams(window.location.search);
  const token = params.get('token');
  const refreshSeconds = Math.max(0.5, Number.parseFloat(params.get('refresh') || '10') || 10);
  // Relative, so the board also works when the aggregator is served under a path prefix.
  const statusUrl = (query) => new URL(`status${query || ''}`, window.location.href).toString();

  // Owned by the refresh loop; read by render and the ticker.
  let lastDoc = null;
  let lastOkAt = null;
  // The view's state, mirrored in the URL (writeUrl) so a link shows the same view:
  // ?view=probes, ?filter=TEXT, ?problems=1, and ?open=CLUSTER or ?open=CLUSTER:LAYER (repeated).
  const view = {
    mode: params.get('view') === 'probes' ? 'probes' : 'clusters',
    // cluster name -> layer shown in its drill-down, or null for all layers; absent = collapsed.
    expanded: new Map(params.getAll('open').map((o) => {
      const [name, layer] = o.split(':');
      return [name, layer || null];
    })),
    history: (name) => histories.get(name),
  };
  // Recent results of opened clusters, from /status?cluster=NAME&history=1: per cluster,
  // {byCheck: Map "namespace/probe/check" -> results} or {error}. Owned by fetchHistory.
  const histories = new Map();
  const fetching = new Set();

  const $ = (id) => document.getElementById(id);

  function writeUrl() {
    const url = new URL(window.location.href);
    const p = url.searchParams;
    for (const key of ['view', 'filter', 'problems', 'open']) p.delete(key);
    if (view.mode === 'probes') p.set('view', 'probes');
    if ($('filter').value) p.set('filter', $('filter').value);
    if ($('problems').checked) p.set('problems', '1');
    for (const [name, layer] of view.expanded) p.append('open', layer ? `${name}:${layer}` : name);
    window.history.replaceState(null, '', url);
  }

  function request(query, signal) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    return fetch(statusUrl(query), { headers, cache: 'no-store', credentials: 'same-origin', signal });
  }

  // Ask the aggregator for one cluster's recent results (it asks the agent, through its tunnel).
  async function fetchHistory(name) {
    if (fetching.has(name)) return;
    const cluster = ((lastDoc || {}).clusters || []).find((c) => c.name === name);
    if (!cluster) return; // not (or no longer) in the fleet: nothing is drawn for it
    if (cluster.state !== 'Online') {
      // Nobody to ask: only its agent keeps them.
      histories.set(name, { error: `the cluster is ${String(cluster.state).toLowerCase()}, and only its agent keeps them` });
      return;
    }
    fetching.add(name);
    try {
      const response = await request(`?cluster=${encodeURIComponent(name)}&history=1`);
      const doc = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(doc.error || `HTTP ${response.status} ${response.statusText}`);
      const byCheck = new Map();
      for (const probe of ((doc.clusters || [])[0] || {}).probes || []) {
        for (const check of probe.checks || []) {
          if (Array.isArray(check.history)) byCheck.set(`${probe.namespace}/${probe.name}/${check.name}`, check.history);
        }
      }
      histories.set(name, { byCheck });
    } catch (err) {
      histories.set(name, { error: String(err.message || err) });
    } finally {
      fetching.delete(name);
      if (view.expanded.has(name)) render();
    }
  }

  function visibleClusters(doc) {
    const needle = $('filter').value.trim().toLowerCase();
    return [...(doc.clusters || [])]
      .filter((c) => !needle || String(c.name).toLowerCase().includes(needle))
      .sort((a, b) => clusterRank(b) - clusterRank(a) || String(a.name).localeCompare(String(b.name)));
  }

  const isProblem = (c) => c.state !== 'Online' || configErrors(c).length || clusterRank(c) > SEVERITY.INFO;

  function renderFleet(doc) {
    const clusters = doc.clusters || [];
    const states = ['Online', 'Offline', 'Pending'].map((s) => `${clusters.filter((c) => c.state === s).length} ${s}`);
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
    const clusters = visibleClusters(lastDoc);
    renderFailing($('failing'), clusters);
    const shownClusters = $('problems').checked ? clusters.filter(isProblem) : clusters;
    const byProbe = view.mode === 'probes';
    for (const button of document.querySelectorAll('button[data-mode]')) {
      button.setAttribute('aria-pressed', String(button.dataset.mode === view.mode));
    }
    const clusterTable = document.querySelector('table.clusters');
    const probeTable = document.querySelector('table.probes');
    clusterTable.hidden = byProbe;
    probeTable.hidden = !byProbe;
    let count = shownClusters.length;
    if (byProbe) count = renderProbes(probeTable, clusters, $('problems').checked);
    else renderClusters(clusterTable, view, shownClusters);
    const empty = $('empty');
    empty.hidden = count > 0;
    if (!(lastDoc.clusters || []).length) empty.textContent = 'No clusters registered.';
    else empty.textContent = byProbe ? 'No probe matches.' : 'No cluster matches the filter.';
    if (focusKey) {
      const again = [...document.querySelectorAll('button')].find((b) => b.dataset.key === focusKey);
      if (again) again.focus();
    }
    document.body.dataset.generatedAt = lastDoc.generatedAt ?? '';
  }

  function expand(name, layer) {
    view.expanded.set(name, layer);
    fetchHistory(name);
  }

  // A cluster name, layer cell or "show all layers" in the cluster table.
  function toggle(button) {
    const name = button.dataset.cluster;
    const layer = button.dataset.layer ?? null;
    if (button.dataset.all) view.expanded.set(name, null);
    else if (view.expanded.has(name) && view.expanded.get(name) === layer) view.expanded.delete(name);
    else expand(name, layer);
    writeUrl();
    render();
  }

  // A cluster named in the failing list or the by-probe view: show it opened, in its table.
  function open(button) {
    const name = button.dataset.open;
    view.mode = 'clusters';
    expand(name, button.dataset.layer || null);
    writeUrl();
    render();
    const row = [...document.querySelectorAll('tbody.cluster')].find((b) => b.dataset.cluster === name);
    if (row) {
      row.scrollIntoView({ block: 'start' });
      row.querySelector('button.name').focus();
    }
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
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), Math.max(5000, refreshSeconds * 1000));
    try {
      const response = await request('', abort.signal);
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
      // Opened clusters' strips follow the data.
      for (const name of view.expanded.keys()) fetchHistory(name);
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
    $('filter').value = params.get('filter') || '';
    $('problems').checked = params.get('problems') === '1';
    const controls = 'button[data-open], button[data-cluster], button[data-mode]';
    document.addEventListener('click', (event) => {
      const target = event.target.closest(controls);
      if (!target) return;
      if (target.dataset.open) open(target);
      else if (target.dataset.mode) {
        view.mode = target.dataset.mode;
        writeUrl();
        render();
      } else toggle(target);
    });
    // A button acts on Space only at keyup, and a refresh that redraws the table in between
    // replaces the button that saw the keydown: the press would be lost. Act at keydown, as Enter.
    document.addEventListener('keydown', (event) => {
      const target = event.key === ' ' && !event.repeat && event.target.closest(controls);
      if (!target) return;
      event.preventDefault();
      target.click();
    });
    for (const [id, kind] of [['filter', 'input'], ['problems', 'change']]) {
      $(id).addEventListener(kind, () => {
        writeUrl();
        render();
      });
    }
    setInterval(tick, 1000);
    refresh();
  }

  start();
})();
