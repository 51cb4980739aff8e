// The jobcache dashboard: polls GET /dashboard/state every second and redraws the page; a
// clicked job's record is read from GET /jobs/{id} on each tick until it has finished.
// Plain browser JavaScript: no build step, no library, nothing fetched from elsewhere.
"use strict";

const POLL_MS = 1000;
const HIDDEN_POLL_MS = 5000; // a tab in the background costs Redis less
const RATE_WINDOW_MS = 10000;
const CHART_POINTS = 120;
const KEY_STORAGE = "jobcache-api-key";
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

const view = {
  selected: null, // id of the job whose record is shown
  selectedFinished: false,
  samples: [], // {at, finished: Map(worker id -> finished count), failed}
  throughput: [],
  waiting: [],
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

// Jobs finished per second over the last RATE_WINDOW_MS, from the workers' own counts: only
// workers present at both ends of the window count, so a worker that starts or stops never
// shows as a burst.
function recordSample(state, now) {
  const finished = new Map();
  for (const worker of state.workers) {
    finished.set(worker.id, worker.succeeded + worker.failed + worker.cancelled);
  }
  view.samples.push({ at: now, finished });
  while (view.samples.length > 2 && now - view.samples[1].at >= RATE_WINDOW_MS) {
    view.samples.shift();
  }
  const oldest = view.samples[0];
  if (oldest.at === now) return null;
  let done = 0;
  for (const [id, count] of finished) {
    if (oldest.finished.has(id)) done += Math.max(0, count - oldest.finished.get(id));
  }
  return done / ((now - oldest.at) / 1000);
}

function pushPoint(series, value) {
  series.push(value);
  if (series.length > CHART_POINTS) series.shift();
}

function drawChart(canvas, series, color) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...series);
  context.fillStyle = "#687385";
  context.font = "11px system-ui, sans-serif";
  context.fillText(top.toFixed(top < 10 ? 1 : 0), 2, 11);
  if (series.length < 2) return;
  const step = width / (CHART_POINTS - 1);
  const start = width - step * (series.length - 1);
  context.beginPath();
  series.forEach((value, index) => {
    const x = start + index * step;
    const y = height - 2 - (value / top) * (height - 16);
    if (index === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.strokeStyle = color;
  context.lineWidth = 1.5;
  context.stroke();
}

function showJobButton(job) {
  const button = element("button", { type: "button", className: "job-link", title: job.id }, job.id);
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    select(job.id);
  });
  return button;
}

function renderTiles(state, rate) {
  const failed = state.workers.reduce((sum, worker) => sum + worker.failed, 0);
  const capacity = state.workers.reduce((sum, worker) => sum + worker.concurrency, 0);
  $("waiting").textContent = state.queue.waiting;
  $("running").textContent = state.queue.running;
  $("capacity").textContent = `of ${capacity} slots`;
  $("deferred").textContent = state.queue.deferred;
  $("throughput").textContent = rate === null ? "…" : rate.toFixed(rate < 10 ? 1 : 0);
  $("failed").textContent = failed;
  $("failed").parentElement.classList.toggle("alert", failed > 0);
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

function renderQueues(state) {
  const body = $("queues").tBodies[0];
  body.replaceChildren(
    ...state.queues.map((queue) => {
      // A queue no live worker serves: its jobs wait until one with it in WORKER_QUEUES starts.
      const unserved = queue.workers === 0;
      return element(
        "tr",
        { dataset: { queue: queue.name }, className: unserved ? "alert" : "" },
        element("td", {}, element("code", {}, queue.name)),
        element("td", { className: "number" }, String(queue.waiting)),
        element("td", { className: "number" }, String(queue.running)),
        element("td", { className: "number" }, String(queue.deferred)),
        element("td", { className: "number" }, unserved ? "no worker" : String(queue.workers)),
      );
    }),
  );
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

function render(state) {
  const now = Date.parse(state.generated_at);
  $("deployment").textContent = `${state.backend} mode · namespace ${state.namespace}`;
  const rate = recordSample(state, now);
  pushPoint(view.throughput, rate ?? 0);
  pushPoint(view.waiting, state.queue.waiting);
  renderTiles(state, rate);
  renderQueues(state);
  renderWorkers(state, now);
  renderJobs(state, now);
  drawChart($("throughput-chart"), view.throughput, "#2f6fde");
  drawChart($("queue-chart"), view.waiting, "#b7791f");
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

async function tick() {
  try {
    render(await getJson("/dashboard/state"));
    setConnection("live", `live · ${new Date().toLocaleTimeString()}`);
    await refreshDetail();
  } catch (problem) {
    if (problem.needsKey) askForKey();
    else setConnection("offline", `not answering: ${problem.message}`);
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
