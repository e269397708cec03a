// tunnelmon web view: a chord diagram of the hosts (outer IPs) that talk
// through VXLAN tunnels, weighted by bytes, from /api/stats (pytrace
// tunnelmon --web).  Arcs are hosts carrying traffic, ribbons the pairs that
// talk; a ring outside the arcs splits each host by VNI (a colour per VNI,
// named in the legend), each host's label names its VNIs and each ribbon's
// tooltip gives its bytes per VNI (BCC's tunnel_monitor shows the VNI in its
// view too); clicking a host lists the inner (overlay) addresses behind it.
// Needs only d3, bundled with pytrace (static/vendor/): works offline.
"use strict";

(function () {
  const RADIUS = 230, THICK = 20, RING = 10, GAP = 3;
  const state = { data: null, vni: "all", selected: null, timer: null };
  const color = d3.scaleOrdinal(d3.schemeTableau10);
  const vniColor = d3.scaleOrdinal(d3.schemeSet2);
  const $ = (id) => document.getElementById(id);

  const svg = d3.select("#chord");
  const ribbonLayer = svg.append("g").attr("class", "ribbons");
  const arcLayer = svg.append("g").attr("class", "arcs");
  const vniLayer = svg.append("g").attr("class", "vnis");
  const labelLayer = svg.append("g").attr("class", "labels");
  const legendLayer = svg.append("g").attr("class", "vni-legend");
  const arc = d3.arc().innerRadius(RADIUS).outerRadius(RADIUS + THICK);
  const vniArc = d3.arc().innerRadius(RADIUS + THICK + GAP).outerRadius(RADIUS + THICK + GAP + RING);
  const ribbon = d3.ribbon().radius(RADIUS - 2);
  const chordLayout = d3.chord().padAngle(0.04).sortSubgroups(d3.descending);

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function setStatus(text, error) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", !!error);
  }

  // -- data ------------------------------------------------------------------
  async function load() {
    let data;
    try {
      const response = await fetch("/api/stats", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      data = await response.json();
    } catch (err) {
      setStatus("cannot read the stats (" + err.message + "); is pytrace still running?", true);
      return;
    }
    state.data = data;
    setStatus("updated " + new Date(data.time * 1000).toLocaleTimeString());
    render();
  }

  function visibleFlows() {
    const flows = state.data ? state.data.flows : [];
    return state.vni === "all" ? flows : flows.filter((f) => String(f.vni) === state.vni);
  }

  // Bytes between hosts: matrix[i][j] is what host i sent to host j.  The
  // monitor's keys are oriented to its own host (outer_src): tx went from
  // outer_src to outer_dst, rx the other way.
  function hostMatrix(flows) {
    const names = [...new Set(flows.filter((f) => f.tx_bytes + f.rx_bytes > 0)
      .flatMap((f) => [f.outer_src, f.outer_dst]))].sort(compareAddr);
    const index = new Map(names.map((h, i) => [h, i]));
    const matrix = names.map(() => names.map(() => 0));
    for (const f of flows) {
      if (!index.has(f.outer_src) || !index.has(f.outer_dst)) continue;
      const s = index.get(f.outer_src), d = index.get(f.outer_dst);
      matrix[s][d] += f.tx_bytes;
      matrix[d][s] += f.rx_bytes;
    }
    return { names, matrix };
  }

  // Bytes per VNI: of each host (sent and received), of each pair of hosts.
  function vniBytes(flows) {
    const host = new Map(), pair = new Map();
    const add = (map, key, vni, n) => {
      const m = map.get(key) || new Map();
      m.set(vni, (m.get(vni) || 0) + n);
      map.set(key, m);
    };
    for (const f of flows) {
      const n = f.tx_bytes + f.rx_bytes;
      if (n === 0) continue;
      const vni = String(f.vni);
      add(host, f.outer_src, vni, n);
      add(host, f.outer_dst, vni, n);
      add(pair, [f.outer_src, f.outer_dst].sort(compareAddr).join("|"), vni, n);
    }
    return { host, pair };
  }

  const byVni = (m) => [...(m || new Map()).entries()].sort((a, b) => a[0] - b[0]);

  function compareAddr(a, b) {
    const key = (x) => x.includes(":") ? "6" + x.split(":").map((p) => p.padStart(4, "0")).join(":")
      : "4" + x.split(".").map((p) => p.padStart(3, "0")).join(".");
    return key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
  }

  // -- drawing -----------------------------------------------------------------
  function render() {
    updateVniChoices();
    renderWhere();
    renderChord();
    renderDetail();
    renderAnomalies();
  }

  function renderWhere() {
    const m = (state.data && state.data.meta) || {};
    const parts = [];
    if (m.dev) parts.push("dev " + m.dev);
    if (m.netns) parts.push("netns " + m.netns);
    if (m.port) parts.push("UDP " + m.port);
    if (m.hook) parts.push(m.hook === "xdp" ? "XDP (RX only)" : m.hook);
    $("where").textContent = parts.join(" · ");
  }

  function updateVniChoices() {
    const select = $("vni");
    const vnis = [...new Set((state.data ? state.data.flows : []).map((f) => String(f.vni)))]
      .sort((a, b) => a - b);
    const have = [...select.options].map((o) => o.value).slice(1);
    if (have.join() === vnis.join()) return;
    while (select.options.length > 1) select.remove(1);
    for (const v of vnis) select.add(new Option(v, v));
    // a chosen VNI stays selectable even when it has no traffic in this answer
    if (state.vni !== "all" && !vnis.includes(state.vni)) select.add(new Option(state.vni, state.vni));
    select.value = state.vni;
  }

  function renderChord() {
    const flows = visibleFlows();
    const { names, matrix } = hostMatrix(flows);
    const perVni = vniBytes(flows);
    hostNames = names;
    $("empty").hidden = names.length > 0;
    const chords = chordLayout(matrix);
    groupValue = chords.groups.reduce((acc, g) => { acc[g.index] = g.value; return acc; }, []);
    const sel = state.selected;

    ribbonLayer.selectAll("path.ribbon")
      .data(chords, (c) => names[c.source.index] + "|" + names[c.target.index])
      .join("path")
      .attr("class", "ribbon")
      .classed("faded", (c) => sel !== null && names[c.source.index] !== sel && names[c.target.index] !== sel)
      .attr("data-source", (c) => names[c.source.index])
      .attr("data-target", (c) => names[c.target.index])
      .attr("d", ribbon)
      .attr("fill", (c) => color(names[leaf(c)]))
      .attr("data-vnis", (c) => byVni(perVni.pair.get(pairKey(c))).map(([v]) => v).join(","))
      .selectAll("title").data((c) => [c]).join("title")
      .text((c) => `${names[c.source.index]} → ${names[c.target.index]}: ${bytes(c.source.value)}\n` +
        `${names[c.target.index]} → ${names[c.source.index]}: ${bytes(c.target.value)}\n` +
        byVni(perVni.pair.get(pairKey(c))).map(([v, n]) => `VNI ${v}: ${bytes(n)}`).join("\n"));

    arcLayer.selectAll("path.arc")
      .data(chords.groups, (g) => names[g.index])
      .join("path")
      .attr("class", "arc")
      .classed("selected", (g) => names[g.index] === sel)
      .attr("data-host", (g) => names[g.index])
      .attr("data-cx", (g) => arc.centroid(g)[0].toFixed(1))
      .attr("data-cy", (g) => arc.centroid(g)[1].toFixed(1))
      .attr("d", arc)
      .attr("fill", (g) => color(names[g.index]))
      .on("click", (event, g) => select(names[g.index]))
      .selectAll("title").data((g) => [g]).join("title")
      .text((g) => `${names[g.index]}: ${bytes(g.value)} sent and received`);

    // the VNI ring: each host's arc split by its VNIs' shares of its bytes
    const bands = chords.groups.flatMap((g) => {
      const parts = byVni(perVni.host.get(names[g.index]));
      const total = parts.reduce((acc, [, n]) => acc + n, 0) || 1;
      let at = g.startAngle;
      return parts.map(([vni, n]) => {
        const end = at + (g.endAngle - g.startAngle) * n / total;
        const band = { host: names[g.index], vni, bytes: n, startAngle: at, endAngle: end };
        at = end;
        return band;
      });
    });
    vniLayer.selectAll("path.vni")
      .data(bands, (b) => b.host + "|" + b.vni)
      .join("path")
      .attr("class", "vni")
      .attr("data-host", (b) => b.host)
      .attr("data-vni", (b) => b.vni)
      .attr("d", vniArc)
      .attr("fill", (b) => vniColor(b.vni))
      .selectAll("title").data((b) => [b]).join("title")
      .text((b) => `${b.host}, VNI ${b.vni}: ${bytes(b.bytes)} sent and received`);

    const vnisOf = (g) => byVni(perVni.host.get(names[g.index])).map(([v]) => v);
    labelLayer.selectAll("text.label")
      .data(chords.groups, (g) => names[g.index])
      .join("text")
      .attr("class", "label")
      .classed("selected", (g) => names[g.index] === sel)
      .attr("data-host", (g) => names[g.index])
      .attr("data-vnis", (g) => vnisOf(g).join(","))
      .each(function (g) {
        const a = (g.startAngle + g.endAngle) / 2;
        const r = RADIUS + THICK + GAP + RING + 8;
        const flip = a > Math.PI;
        const text = d3.select(this)
          .attr("transform", `rotate(${(a * 180 / Math.PI) - 90}) translate(${r}) ${flip ? "rotate(180)" : ""}`)
          .attr("text-anchor", flip ? "end" : "start");
        // two lines: the host, then its VNIs
        text.selectAll("tspan").data([names[g.index], "VNI " + vnisOf(g).join(", ")]).join("tspan")
          .attr("x", 0)
          .attr("dy", (_, i) => i ? "1.2em" : "-0.25em")
          .attr("class", (_, i) => i ? "vnis" : "host")
          .text((line) => line);
      })
      .on("click", (event, g) => select(names[g.index]));

    // the legend: one swatch per VNI shown
    const vnis = [...new Set(bands.map((b) => b.vni))].sort((a, b) => a - b);
    const entries = legendLayer.attr("transform", "translate(-450, -445)")
      .selectAll("g.entry").data(vnis, (v) => v).join((enter) => {
        const e = enter.append("g").attr("class", "entry");
        e.append("rect").attr("width", 12).attr("height", 12).attr("y", -10);
        e.append("text").attr("x", 18);
        return e;
      });
    entries.attr("transform", (_, i) => `translate(0, ${i * 18})`).attr("data-vni", (v) => v);
    entries.select("rect").attr("fill", (v) => vniColor(v));
    entries.select("text").text((v) => "VNI " + v);
  }

  function pairKey(c) {
    return [hostNames[c.source.index], hostNames[c.target.index]].sort(compareAddr).join("|");
  }
  let hostNames = [];

  // A ribbon takes the colour of its end with less traffic overall: seen from
  // one monitored host (a star) each ribbon then has its peer's colour.
  let groupValue = [];
  function leaf(c) {
    return groupValue[c.target.index] <= groupValue[c.source.index] ? c.target.index : c.source.index;
  }

  function select(host) {
    state.selected = state.selected === host ? null : host;
    renderChord();
    renderDetail();
  }

  // The inner addresses behind a host, with what each sent and received.
  function innerOf(host, flows) {
    const rows = new Map();
    const add = (ip, vni, peer, sentP, sentB, recvP, recvB) => {
      const k = ip + "|" + vni;
      const r = rows.get(k) || { ip, vni, peers: new Set(), sentP: 0, sentB: 0, recvP: 0, recvB: 0 };
      r.peers.add(peer);
      r.sentP += sentP; r.sentB += sentB; r.recvP += recvP; r.recvB += recvB;
      rows.set(k, r);
    };
    for (const f of flows) {
      if (f.tx_pkts + f.rx_pkts === 0) continue;
      if (f.outer_src === host) add(f.inner_src, f.vni, f.inner_dst, f.tx_pkts, f.tx_bytes, f.rx_pkts, f.rx_bytes);
      if (f.outer_dst === host) add(f.inner_dst, f.vni, f.inner_src, f.rx_pkts, f.rx_bytes, f.tx_pkts, f.tx_bytes);
    }
    return [...rows.values()].sort((a, b) => (b.sentB + b.recvB) - (a.sentB + a.recvB) || compareAddr(a.ip, b.ip));
  }

  function renderDetail() {
    const host = state.selected;
    const table = $("inner");
    if (host === null) {
      $("detail-title").textContent = "Inner addresses";
      $("detail-hint").textContent = "Click a host in the diagram to see the overlay (inner) addresses behind it.";
      $("detail-hint").hidden = false;
      table.hidden = true;
      return;
    }
    const rows = innerOf(host, visibleFlows());
    $("detail-title").textContent = "Inner addresses behind " + host +
      (state.vni === "all" ? "" : " in VNI " + state.vni);
    $("detail-hint").textContent = rows.length ? "" : "No traffic for this host in this view.";
    $("detail-hint").hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    d3.select(table).select("tbody").selectAll("tr")
      .data(rows, (r) => r.ip + "|" + r.vni)
      .join("tr")
      .attr("data-ip", (r) => r.ip)
      .attr("data-vni", (r) => r.vni)
      .html(null)
      .call((tr) => {
        tr.append("td").attr("class", "inner-ip").text((r) => r.ip);
        tr.append("td").text((r) => r.vni);
        tr.append("td").attr("class", "peers").text((r) => [...r.peers].sort(compareAddr).join(", "));
        tr.append("td").attr("class", "num").text((r) => `${r.sentP} / ${bytes(r.sentB)}`);
        tr.append("td").attr("class", "num").text((r) => `${r.recvP} / ${bytes(r.recvB)}`);
      });
  }

  function renderAnomalies() {
    const d = state.data || {};
    const parts = [];
    for (const kind of ["skipped", "malformed"]) {
      const nonzero = Object.entries(d[kind] || {}).filter(([, v]) => v > 0).map(([k, v]) => k + "=" + v);
      if (nonzero.length) parts.push(kind + ": " + nonzero.join(" "));
    }
    $("anomalies").textContent = parts.length ? "Frames not counted above: " + parts.join("; ") : "";
  }

  // -- controls ----------------------------------------------------------------
  function schedule() {
    clearInterval(state.timer);
    state.timer = null;
    if ($("auto").checked) state.timer = setInterval(load, Number($("period").value));
  }

  $("vni").addEventListener("change", (e) => { state.vni = e.target.value; render(); });
  $("auto").addEventListener("change", schedule);
  $("period").addEventListener("change", schedule);
  $("refresh").addEventListener("click", load);

  load();
  schedule();
})();
