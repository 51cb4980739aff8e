// The jobcache dashboard: polls GET /dashboard/state every second and redraws the page; a
// clicked job's record is read from GET /jobs/{id} on each tick until it has finished. A kept
// failure's Retry button runs it again (POST /jobs/{id}/retry) and follows its record.
// The charts are the backend's history of the last hour: the first answer holds all of it, so
// the first paint draws it; later polls ask only for the intervals since the last answer.
// Plain browser JavaScript: no build step, no library, nothing fetched from elsewhere.
"use strict";

const POLL_MS = 1000;
const HIDDEN_POLL_MS = 5000; // a tab in the background costs Redis less
const HOUR_MS = 3600 * 1000;
const RATE_WINDOW_MS = 60 * 1000;
const TYPE_RECENT_MS = 5 * 60 * 1000;
const KEY_STORAGE = "jobcache-api-key";
const FINISHED = new Set(["succeeded", "failed", "cancelled", "expired"]);
const COLORS = { finished: "#2f6fde", failed: "#c8372d", waiting: "#b7791f", axis: "#687385", grid: "#e3e7ee" };

const view = {
  selected: null, // id of the job whose record is shown
  selectedFinished: false,
  intervals: new Map(), // start (ms) -> interval of the history
  intervalMs: 10000,
  historyUntil: null, // generated_at (ms) of the last answer: the next asks from just before
  apiKey: sessionStorage.getItem(KEY_STORAGE),
};

function $(id) {
  return document.getElementById(id);
}

function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(properties)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function requestHeaders() {
  return view.apiKey ? { Authorization: `Bearer ${view.apiKey}` } : {};
}

async function getJson(path) {
  const response = await fetch(path, { headers: requestHeaders(), cache: "no-store" });
  if (response.status === 401 || response.status === 403) {
    const problem = new Error("an API key is needed");
    problem.needsKey = true;
    throw problem;
  }
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

function seconds(ms) {
  const total = Math.max(0, ms / 1000);
  if (total < 1) return `${Math.round(total * 1000)} ms`;
  if (total < 60) return `${total.toFixed(total < 10 ? 1 : 0)} s`;
  if (total < 3600) return `${Math.floor(total / 60)} min ${Math.round(total % 60)} s`;
  return `${Math.floor(total / 3600)} h ${Math.round((total % 3600) / 60)} min`;
}

function ago(iso, now) {
  return `${seconds(now - Date.parse(iso))} ago`;
}

function setConnection(state, text) {
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = text;
}

// The answer's intervals replace those of the same start (the last ones were still filling).
function mergeHistory(history, now) {
  view.intervalMs = history.interval_seconds * 1000;
  const since = Date.parse(history.since);
  for (const start of view.intervals.keys()) {
    if (start >= since || start < now - HOUR_MS - view.intervalMs) view.intervals.delete(start);
  }
  for (const interval of history.intervals) view.intervals.set(Date.parse(interval.start), interval);
  view.historyUntil = now;
}

function historyQuery() {
  if (view.historyUntil === null) return "";
  // Two intervals back: a worker adds what it counted up to a heartbeat (2 s) late.
  const since = new Date(view.historyUntil - 2 * view.intervalMs).toISOString();
  return `?history_since=${encodeURIComponent(since)}`;
}

// The hour as one value per interval, oldest first: `pick` reads an interval's value; an
// interval the history left out held nothing (0), or was not sampled (`missing`).
function series(now, pick, missing) {
  const step = view.intervalMs;
  const last = Math.floor(now / step) * step;
  const values = [];
  for (let start = last - HOUR_MS + step; start <= last; start += step) {
    const interval = view.intervals.get(start);
    values.push({ start, value: interval ? pick(interval) : missing });
  }
  return values;
}

function finishedWithin(now, windowMs) {
  let finished = 0;
  let failed = 0;
  for (const [start, interval] of view.intervals) {
    if (start + view.intervalMs > now - windowMs) {
      finished += interval.finished;
      failed += interval.failed;
    }
  }
  return { finished, failed };
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

function niceTop(value) {
  if (value <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 2.5, 5, 10]) if (value <= factor * magnitude) return factor * magnitude;
  return 10 * magnitude;
}

function numberLabel(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 1 : 0);
}

// A chart of the last hour: time axis (clock times every 15 min, "now" at the right), zero
// line, the top of the value axis, and one line per series (a null value is a gap). What it
// drew is also written on the canvas's data attributes, for tests and assistive tools.
function drawChart(canvas, now, lines) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const plot = { left: 34, right: width - 8, top: 8, bottom: height - 18 };
  const values = lines.flatMap((line) => line.points.map((point) => point.value ?? 0));
  const top = niceTop(Math.max(0, ...values));
  const start = now - HOUR_MS;
  const x = (ms) => plot.left + ((ms - start) / HOUR_MS) * (plot.right - plot.left);
  const y = (value) => plot.bottom - (value / top) * (plot.bottom - plot.top);
  context.font = "11px system-ui, sans-serif";
  context.lineWidth = 1;
  // Value axis: the top and the zero line.
  context.strokeStyle = COLORS.grid;
  context.beginPath();
  context.moveTo(plot.left, y(top));
  context.lineTo(plot.right, y(top));
  context.stroke();
  context.strokeStyle = COLORS.axis;
  context.beginPath();
  context.moveTo(plot.left, y(0));
  context.lineTo(plot.right, y(0));
  context.moveTo(plot.left, plot.top);
  context.lineTo(plot.left, plot.bottom);
  context.stroke();
  context.fillStyle = COLORS.axis;
  context.textAlign = "right";
  context.textBaseline = "middle";
  context.fillText(numberLabel(top), plot.left - 4, y(top));
  context.fillText("0", plot.left - 4, y(0));
  // Time axis: a tick every 15 minutes, and now.
  const ticks = [];
  context.textBaseline = "top";
  for (let minutes = 0; minutes <= 60; minutes += 15) {
    const at = start + minutes * 60 * 1000;
    const label = minutes === 60 ? "now" : clock(at);
    ticks.push(label);
    context.textAlign = minutes === 0 ? "left" : minutes === 60 ? "right" : "center";
    context.beginPath();
    context.moveTo(x(at), plot.bottom);
    context.lineTo(x(at), plot.bottom + 3);
    context.stroke();
    context.fillText(label, x(at), plot.bottom + 4);
  }
  const drawn = {};
  for (const line of lines) {
    context.strokeStyle = line.color;
    context.lineWidth = 1.5;
    context.beginPath();
    let pen = false;
    let total = 0;
    for (const point of line.points) {
      if (point.value === null) {
        pen = false;
        continue;
      }
      total += point.value;
      const px = x(point.start + view.intervalMs / 2);
      const py = y(point.value);
      if (pen) context.lineTo(px, py);
      else context.moveTo(px, py);
      pen = true;
    }
    context.stroke();
    drawn[line.name] = Math.round(total * 1000) / 1000;
  }
  canvas.dataset.top = String(top);
  canvas.dataset.zeroLine = String(Math.round(y(0)));
  canvas.dataset.timeTicks = JSON.stringify(ticks);
  canvas.dataset.totals = JSON.stringify(drawn);
  canvas.dataset.from = new Date(start).toISOString();
  canvas.dataset.to = new Date(now).toISOString();
}

function drawCharts(now) {
  const perSecond = view.intervalMs / 1000;
  drawChart($("throughput-chart"), now, [
    { name: "finished", color: COLORS.finished, points: series(now, (i) => i.finished / perSecond, 0) },
    { name: "failed", color: COLORS.failed, points: series(now, (i) => i.failed / perSecond, 0) },
  ]);
  drawChart($("queue-chart"), now, [
    { name: "waiting", color: COLORS.waiting, points: series(now, (i) => i.waiting, null) },
  ]);
  for (const label of document.querySelectorAll(".interval")) label.textContent = `${perSecond} s`;
}

function showJobButton(job) {
  const button = element("button", { type: "button", className: "job-link", title: job.id }, job.id);
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    select(job.id);
  });
  return button;
}

function renderHealth(health) {
  const redis = health.redis === null ? "local mode, no Redis" : health.redis ? "Redis reachable" : "Redis unreachable";
  $("health-api").textContent = health.api === "up" ? "api up" : "api not answering";
  $("health-api").dataset.state = health.api === "up" ? "ok" : "bad";
  $("health-redis").textContent = redis;
  $("health-redis").dataset.state = health.redis === false ? "bad" : "ok";
  const healthy = health.api === "up" && health.redis !== false;
  $("health").textContent = healthy ? "ok" : "degraded";
  $("health-tile").classList.toggle("alert", !healthy);
}

function renderTiles(state, now) {
  const capacity = state.workers.reduce((sum, worker) => sum + worker.concurrency, 0);
  const lastMinute = finishedWithin(now, RATE_WINDOW_MS);
  const lastHour = finishedWithin(now, HOUR_MS);
  const rate = lastMinute.finished / (RATE_WINDOW_MS / 1000);
  const oldest = state.queue.oldest_waiting_seconds;
  $("waiting").textContent = state.queue.waiting;
  $("oldest-waiting").textContent = oldest === null ? "none" : seconds(oldest * 1000);
  $("running").textContent = state.queue.running;
  $("capacity").textContent = `of ${capacity} slots`;
  $("deferred").textContent = state.queue.deferred;
  $("throughput").textContent = rate.toFixed(rate < 10 ? 1 : 0);
  $("failed").textContent = lastHour.failed;
  $("failed").parentElement.classList.toggle("alert", lastHour.failed > 0);
  $("failure-rate").textContent = lastHour.finished
    ? `last hour · ${((100 * lastHour.failed) / lastHour.finished).toFixed(1)}% of ${lastHour.finished} finished`
    : "last hour";
  $("workers-alive").textContent = state.workers.length;
  $("workers-alive").parentElement.classList.toggle("alert", state.workers.length === 0);
}

function renderWorkers(state, now) {
  const body = $("workers").tBodies[0];
  body.replaceChildren(
    ...state.workers.map((worker) => {
      // A job of another API key's caller comes without its id.
      const running = worker.running.length
        ? worker.running.map((job) =>
            element("span", { className: "running-job" }, `${job.name} `, job.id ? showJobButton(job) : null),
          )
        : ["idle"];
      const metrics = worker.metrics_address
        ? element("a", { href: `http://${worker.metrics_address}/metrics` }, worker.metrics_address)
        : "this api's /metrics";
      return element(
        "tr",
        { dataset: { workerId: worker.id } },
        element("td", {}, element("code", {}, worker.id)),
        element("td", {}, `${worker.host} · ${worker.pid}`),
        element("td", {}, seconds(now - Date.parse(worker.started_at))),
        element("td", {}, worker.queues.join(", ")),
        element("td", {}, ...running),
        element("td", { className: "number" }, String(worker.succeeded)),
        element("td", { className: "number" }, String(worker.failed)),
        element("td", { className: "number" }, String(worker.retried)),
        element("td", {}, metrics),
      );
    }),
  );
  $("no-workers").hidden = state.workers.length > 0;
}

// Per queue or job type, what the last hour's intervals hold (`windowMs` back from now).
function totalsBy(kind, now, windowMs = HOUR_MS) {
  const totals = new Map();
  for (const [start, interval] of view.intervals) {
    if (start + view.intervalMs <= now - windowMs) continue;
    for (const [name, figures] of Object.entries(interval[kind])) {
      const total = totals.get(name) || { finished: 0, failed: 0 };
      total.finished += figures.finished;
      total.failed += figures.failed;
      totals.set(name, total);
    }
  }
  return totals;
}

function queueNote(queue) {
  if (queue.paused) return "paused: its jobs wait until it is resumed";
  // A queue no live worker serves: its jobs wait until one with it in WORKER_QUEUES starts.
  if (queue.workers === 0) return "no worker serves it";
  // Its workers are alive but every slot is taken, some by other queues' jobs.
  if (queue.busy_elsewhere) return "workers busy with other queues";
  return "";
}

function steerButton(queue) {
  // Pause (or resume) the queue: POST /queues/{name}/pause or /resume, an admin key's act when
  // the api has keys; the next poll shows the queue as it then is.
  const action = queue.paused ? "resume" : "pause";
  const button = element(
    "button",
    { type: "button", className: "steer", dataset: { action } },
    queue.paused ? "Resume" : "Pause",
  );
  button.addEventListener("click", async () => {
    button.disabled = true;
    const message = $("queues-message");
    try {
      const response = await fetch(`/queues/${encodeURIComponent(queue.name)}/${action}`, {
        method: "POST",
        headers: requestHeaders(),
        cache: "no-store",
      });
      const body = await response.json();
      if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : `answered ${response.status}`);
      message.textContent = `Queue ${queue.name} ${body.paused ? "paused: it takes jobs and starts none" : "resumed"}.`;
      message.dataset.state = "ok";
      render(await getJson(`/dashboard/state${historyQuery()}`));
    } catch (problem) {
      message.textContent = `Could not ${action} ${queue.name}: ${problem.message}`;
      message.dataset.state = "bad";
      button.disabled = false;
    }
    message.hidden = false;
  });
  return button;
}

function renderQueues(state, now) {
  const hour = totalsBy("queues", now);
  const body = $("queues").tBodies[0];
  body.replaceChildren(
    ...state.queues.map((queue) => {
      const unserved = queue.workers === 0;
      const totals = hour.get(queue.name) || { finished: 0, failed: 0 };
      const age = queue.oldest_waiting_seconds;
      const className = queue.paused ? "paused" : unserved ? "alert" : queue.busy_elsewhere ? "busy" : "";
      return element(
        "tr",
        {
          dataset: { queue: queue.name, busyElsewhere: String(queue.busy_elsewhere), paused: String(queue.paused) },
          className,
        },
        element("td", {}, element("code", {}, queue.name)),
        element("td", { className: "number" }, String(queue.waiting)),
        element("td", { className: "number oldest" }, age === null ? "" : seconds(age * 1000)),
        element("td", { className: "number" }, String(queue.running)),
        element("td", { className: "number" }, String(queue.deferred)),
        element("td", { className: "number" }, unserved ? "no worker" : String(queue.workers)),
        element("td", { className: "number finished" }, String(totals.finished)),
        element("td", { className: "number failed" }, String(totals.failed)),
        element("td", { className: "note" }, queueNote(queue)),
        element("td", {}, steerButton(queue)),
      );
    }),
  );
}

function renderTypes(now) {
  const hour = totalsBy("types", now);
  const recent = totalsBy("types", now, TYPE_RECENT_MS);
  const names = [...hour.keys()].sort((a, b) => hour.get(b).finished - hour.get(a).finished || a.localeCompare(b));
  $("types").tBodies[0].replaceChildren(
    ...names.map((name) => {
      const totals = hour.get(name);
      const share = totals.finished ? (100 * totals.failed) / totals.finished : 0;
      return element(
        "tr",
        { dataset: { type: name }, className: totals.failed ? "has-failures" : "" },
        element("td", {}, element("code", {}, name)),
        element("td", { className: "number finished" }, String(totals.finished)),
        element("td", { className: "number failed" }, String(totals.failed)),
        element("td", { className: "number" }, `${share.toFixed(share && share < 10 ? 1 : 0)}%`),
        element("td", { className: "number" }, String((recent.get(name) || { finished: 0 }).finished)),
      );
    }),
  );
  $("no-types").hidden = names.length > 0;
}

function progressCell(job) {
  if (job.status === "succeeded") return element("td", {}, element("progress", { max: "1", value: "1" }));
  if (!job.progress) return element("td", {}, job.status === "running" ? "running…" : "");
  const { current, total, message } = job.progress;
  return element(
    "td",
    {},
    element("progress", { max: String(total || 1), value: String(Math.min(current, total || 1)) }),
    element("span", { className: "progress-text" }, message || `${current} / ${total}`),
  );
}

function tookCell(job, now) {
  if (!job.started_at) return element("td", { className: "number" }, "");
  const end = job.finished_at ? Date.parse(job.finished_at) : now;
  return element("td", { className: "number" }, seconds(end - Date.parse(job.started_at)));
}

function renderJobs(state, now) {
  const body = $("jobs").tBodies[0];
  body.replaceChildren(
    ...state.recent.map((job) => {
      const status = element("span", { className: "status", dataset: { status: job.status } }, job.status);
      const error = job.error && job.status !== "succeeded" ? element("span", { className: "error" }, job.error) : null;
      const row = element(
        "tr",
        { dataset: { jobId: job.id, status: job.status } },
        element("td", {}, showJobButton(job)),
        element("td", {}, job.name),
        element("td", {}, status, error),
        progressCell(job),
        element("td", { className: "number" }, `${job.attempts} / ${job.max_attempts}`),
        element("td", {}, ago(job.created_at, now)),
        tookCell(job, now),
      );
      if (job.id === view.selected) row.classList.add("selected");
      row.addEventListener("click", () => select(job.id));
      return row;
    }),
  );
  $("no-jobs").hidden = state.recent.length > 0;
}

function retryButton(job) {
  const button = element("button", { type: "button", className: "retry", dataset: { jobId: job.id } }, "Retry");
  button.addEventListener("click", async (event) => {
    event.stopPropagation();
    button.disabled = true;
    const message = $("kept-message");
    try {
      const response = await fetch(`/jobs/${encodeURIComponent(job.id)}/retry`, {
        method: "POST",
        headers: requestHeaders(),
        cache: "no-store",
      });
      const body = await response.json();
      if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : `answered ${response.status}`);
      message.textContent = `Job ${job.id} (${job.name}) queued again.`;
      message.dataset.state = "ok";
      select(job.id);
    } catch (problem) {
      message.textContent = `Could not run ${job.id} again: ${problem.message}`;
      message.dataset.state = "bad";
      button.disabled = false;
    }
    message.hidden = false;
  });
  return button;
}

function renderKept(state, now) {
  const body = $("kept").tBodies[0];
  body.replaceChildren(
    ...state.kept_failures.map((job) => {
      const status = element("span", { className: "status", dataset: { status: job.status } }, job.status);
      const row = element(
        "tr",
        { dataset: { jobId: job.id, status: job.status } },
        element("td", {}, showJobButton(job)),
        element("td", {}, job.name),
        element("td", {}, status),
        element("td", {}, job.error ? element("span", { className: "error" }, job.error) : null),
        element("td", {}, job.finished_at ? ago(job.finished_at, now) : "–"),
        element("td", { className: "number" }, `${job.attempts} / ${job.max_attempts}`),
        element("td", {}, retryButton(job)),
      );
      row.addEventListener("click", () => select(job.id));
      return row;
    }),
  );
  $("no-kept").hidden = state.kept_failures.length > 0;
}

function render(state) {
  const now = Date.parse(state.generated_at);
  $("deployment").textContent = `${state.backend} mode · namespace ${state.namespace}`;
  mergeHistory(state.history, now);
  renderHealth(state.health);
  renderTiles(state, now);
  renderQueues(state, now);
  renderTypes(now);
  renderWorkers(state, now);
  renderJobs(state, now);
  renderKept(state, now);
  drawCharts(now);
}

async function refreshDetail() {
  if (!view.selected || view.selectedFinished) return;
  const id = view.selected;
  let text;
  try {
    const record = await getJson(`/jobs/${encodeURIComponent(id)}`);
    view.selectedFinished = FINISHED.has(record.status);
    text = JSON.stringify(record, null, 2);
  } catch (problem) {
    view.selectedFinished = true; // expired or gone: nothing more to follow
    text = `Could not read the record: ${problem.message}`;
  }
  if (view.selected === id) $("detail-record").textContent = text;
}

function select(id) {
  view.selected = id;
  view.selectedFinished = false;
  $("detail").hidden = false;
  $("detail-id").textContent = id;
  $("detail-record").textContent = "loading…";
  for (const row of $("jobs").tBodies[0].rows) {
    row.classList.toggle("selected", row.dataset.jobId === id);
  }
  refreshDetail();
}

function askForKey() {
  $("key-form").hidden = false;
  setConnection("key", "API key needed");
}

// When the state cannot be read, GET /health (open to all) says whether the api or Redis is down.
async function showHealthOnly() {
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const body = await response.json();
    renderHealth({ api: "up", redis: body.redis });
  } catch {
    renderHealth({ api: "down", redis: null });
    $("health-redis").textContent = "Redis unknown";
  }
}

async function tick() {
  try {
    render(await getJson(`/dashboard/state${historyQuery()}`));
    setConnection("live", `live · ${new Date().toLocaleTimeString()}`);
    await refreshDetail();
  } catch (problem) {
    if (problem.needsKey) askForKey();
    else {
      setConnection("offline", `not answering: ${problem.message}`);
      await showHealthOnly();
    }
  } finally {
    window.setTimeout(tick, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
}

function start() {
  $("detail-close").addEventListener("click", () => {
    view.selected = null;
    $("detail").hidden = true;
    for (const row of $("jobs").tBodies[0].rows) row.classList.remove("selected");
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.apiKey = $("key-input").value;
    sessionStorage.setItem(KEY_STORAGE, view.apiKey);
    $("key-form").hidden = true;
  });
  tick();
}

start();
