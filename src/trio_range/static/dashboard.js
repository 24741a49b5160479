// The trio_range dashboard: polls the stats JSON once a second and draws it. No library, no
// network access beyond this server, so it works offline. Served with the page by trio_range.
"use strict";

(function () {
  const POLL_MS = 1000;
  const HISTORY = 120; // points kept in the chart: two minutes at one a second
  const statsPath = document.body.dataset.statsPath;
  // A token, when the server requires one, comes from the URL fragment (/stats#token=...):
  // a fragment is never sent to the server, so it stays out of access logs.
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const samples = []; // {bytesPerS, active}
  let previous = null;
  let polls = 0;

  function byId(id) { return document.getElementById(id); }
  function setText(id, text) { const node = byId(id); if (node) node.textContent = text; }

  function humanBytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
  }

  function humanSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
    if (s < 120) return s.toFixed(2) + " s";
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return (d ? d + " d " : "") + h + " h " + m + " min";
  }

  function setState(text, isError) {
    const node = byId("state");
    node.textContent = text;
    node.className = isError ? "error" : "";
  }

  function render(stats) {
    polls += 1;
    document.body.dataset.polls = String(polls);
    setText("role", stats.role);
    // Plain integers in the big figures: exact, and what scripts and tests compare.
    setText("requests-total", String(stats.requests.total));
    setText("bytes-sent", String(stats.bytes_sent));
    setText("bytes-sent-human", humanBytes(stats.bytes_sent));
    setText("uptime", humanSeconds(stats.uptime_s));
    setText("started-at", stats.started_at);

    const streams = stats.streams;
    setText("streams-active", String(streams.active));
    setText("streams-completed", String(streams.completed));
    setText("streams-aborted", String(streams.aborted));
    setText("streams-failed", String(streams.failed));
    setText("streams-aborted-bytes", humanBytes(streams.aborted_bytes));

    for (const q of ["p50", "p95", "p99"]) {
      setText("ttfb-" + q, humanSeconds(stats.latency.ttfb_s[q]));
      setText("duration-" + q, humanSeconds(stats.latency.duration_s[q]));
    }
    for (const key of ["single", "multi", "unsatisfiable", "ignored"]) {
      setText("ranges-" + key, String(stats.ranges[key]));
    }
    setText("ranges-if-range-failed", String(stats.ranges.if_range_failed));

    const table = byId("by-status");
    table.replaceChildren();
    for (const [status, count] of Object.entries(stats.requests.by_status)) {
      const row = table.insertRow();
      row.insertCell().textContent = status === "0" ? "none (client left)" : status;
      row.insertCell().textContent = String(count);
    }

    if (stats.upstream) {
      byId("upstream").hidden = false;
      setText("upstream-requests", String(stats.upstream.requests));
      setText("upstream-open", String(stats.upstream.open_connections));
      for (const kind of ["connect", "timeout", "truncated", "status_5xx"]) {
        setText("upstream-" + kind.replace("_", "-"), String(stats.upstream.errors[kind]));
      }
    }

    // issue 15: the proxy's slice cache.
    if (stats.cache) {
      const cache = stats.cache;
      byId("cache").hidden = false;
      setText("cache-hit-ratio",
        cache.hit_ratio === null ? "–" : (100 * cache.hit_ratio).toFixed(1) + " %");
      for (const key of ["hit", "miss", "revalidated", "bypass", "collapsed", "evictions"]) {
        setText("cache-" + key, String(cache[key]));
      }
      for (const key of ["bytes_from_cache", "bytes_from_upstream", "disk_bytes"]) {
        setText("cache-" + key.replaceAll("_", "-"), humanBytes(cache[key]));
      }
    }

    // Rates from the difference of two polls, timed by the server's monotonic uptime. A restart
    // (uptime going back) or a counter going back starts the rates afresh.
    if (previous && stats.uptime_s > previous.uptime_s
        && stats.bytes_sent >= previous.bytes_sent) {
      const dt = stats.uptime_s - previous.uptime_s;
      const bytesPerS = (stats.bytes_sent - previous.bytes_sent) / dt;
      const requestsPerS = (stats.requests.total - previous.requests.total) / dt;
      setText("throughput", humanBytes(bytesPerS) + "/s");
      setText("request-rate", requestsPerS.toFixed(1));
      samples.push({ bytesPerS: bytesPerS, active: streams.active });
      if (samples.length > HISTORY) samples.shift();
    } else if (previous) {
      samples.length = 0;
    }
    previous = stats;
    draw();
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function draw() {
    const canvas = byId("chart");
    canvas.dataset.samples = String(samples.length);
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 800, height = canvas.clientHeight || 256;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.scale(ratio, ratio);
    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim();
    const left = 64, right = 40, top = 10, bottom = 20;
    const plotW = width - left - right, plotH = height - top - bottom;
    const maxBytes = niceMax(Math.max(0, ...samples.map((s) => s.bytesPerS)));
    const maxActive = niceMax(Math.max(0, ...samples.map((s) => s.active)));

    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i += 1) {
      const y = top + plotH - (plotH * i) / 4;
      ctx.strokeStyle = color("--line");
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
      ctx.fillStyle = color("--bytes");
      ctx.textAlign = "right";
      ctx.fillText(humanBytes((maxBytes * i) / 4) + "/s", left - 6, y + 4);
      ctx.fillStyle = color("--active");
      ctx.textAlign = "left";
      ctx.fillText(String(Math.round((maxActive * i) / 4 * 10) / 10), left + plotW + 6, y + 4);
    }

    function line(valueOf, max, strokeColor, stepped) {
      if (samples.length === 0) return;
      const x = (i) => left + plotW - ((samples.length - 1 - i) * plotW) / (HISTORY - 1);
      const y = (v) => top + plotH - (plotH * v) / max;
      ctx.strokeStyle = strokeColor;
      ctx.lineWidth = 2;
      ctx.beginPath();
      samples.forEach((sample, i) => {
        if (i === 0) { ctx.moveTo(x(i), y(valueOf(sample))); return; }
        if (stepped) ctx.lineTo(x(i), y(valueOf(samples[i - 1])));
        ctx.lineTo(x(i), y(valueOf(sample)));
      });
      ctx.stroke();
    }
    line((s) => s.bytesPerS, maxBytes, color("--bytes"), false);
    line((s) => s.active, maxActive, color("--active"), true);
  }

  async function poll() {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    let response;
    try {
      response = await fetch(statsPath, { headers: headers, cache: "no-store" });
    } catch (error) {
      setState("server unreachable, retrying (" + error.message + ")", true);
      return;
    }
    if (response.status === 401) {
      setState("this server requires a token: open " + statsPath + "#token=<token>", true);
      return;
    }
    if (!response.ok) {
      setState("the server answered " + response.status + ", retrying", true);
      return;
    }
    render(await response.json());
    setState("live · updated " + new Date().toLocaleTimeString(), false);
  }

  async function loop() {
    try {
      await poll();
    } finally {
      setTimeout(loop, POLL_MS); // after the answer, so a slow server never gets a pile-up
    }
  }

  window.addEventListener("resize", draw);
  loop();
})();
