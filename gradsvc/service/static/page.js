// The gradsvc page: a job in the text area, checked as it is typed (POST /v1/validate), run
// (POST /v1/run, then /v1/graph, /v1/plot and /v1/explain for the pictures and the words), or
// queued (POST /v1/jobs) and watched. Whatever the server sends is shown as text (textContent),
// and pictures come as blob: URLs in <img>, so nothing it sends runs as markup or script.
"use strict";

const CHECK_DELAY_MS = 300; // after the last key stroke: one check per pause, not per key
const TOKEN_KEY = "gradsvc-token";
const FINISHED = new Set(["done", "failed", "cancelled"]);

const $ = (id) => document.getElementById(id);
let checks = 0; // each check's number: an answer to an older one is dropped
let ran = null; // {text, point} of the last run, which the language switch explains again
const blobUrls = {}; // element id -> its current blob: URL, revoked when replaced

// --- requests ---

function headers(contentType) {
  const sent = contentType ? { "Content-Type": contentType } : {};
  const token = $("token").value.trim();
  if (token) sent.Authorization = "Bearer " + token;
  return sent;
}

function postJob(route, text) {
  return fetch(route, { method: "POST", headers: headers("application/yaml"), body: text });
}

// The service's error object ({message, line, col, hint, problems}), or one made from the status.
async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON: a proxy's page, say */ }
  return { message: `${response.status} ${response.statusText}`, hint: null };
}

function networkError(error) {
  return { message: `the server did not answer (${error.message})`,
           hint: "is gradsvc serve running?" };
}

// --- showing things ---

function element(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined) made.textContent = text;
  if (className) made.className = className;
  return made;
}

function showProblems(target, error) {
  const list = element("ul", undefined, "problems");
  for (const problem of error.problems || [error]) {
    const item = element("li");
    if (problem.line != null) {
      item.append(element("span", `line ${problem.line}:${problem.col ?? 1}`, "where"), " ");
    }
    item.append(element("span", problem.message, "message"));
    if (problem.hint) item.append(element("div", "hint: " + problem.hint, "hint"));
    list.append(item);
  }
  target.replaceChildren(list);
  target.classList.remove("ok");
  target.classList.add("bad");
}

function showOk(target, text) {
  target.replaceChildren(element("span", text));
  target.classList.remove("bad");
  target.classList.add("ok");
}

function showImage(id, blob) {
  if (blobUrls[id]) URL.revokeObjectURL(blobUrls[id]);
  blobUrls[id] = URL.createObjectURL(blob);
  $(id).src = $(id + "-link").href = blobUrls[id];
  $(id).hidden = false;
}

function hideImage(id, note, error) {
  $(id).hidden = true;
  $(id + "-link").removeAttribute("href");
  $(id + "-note").textContent = error.message + (error.hint ? ` (${error.hint})` : "");
  $(id + "-note").className = "note " + note;
}

function number(x) {
  if (typeof x !== "number") return String(x); // "nan", "inf": non-finite numbers come as text
  return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(10)));
}

// A value or gradient as text: a number, or a tensor's shape and first numbers.
function valueText(x) {
  if (!Array.isArray(x)) return number(x);
  const flat = x.flat(Infinity);
  const shape = [];
  for (let part = x; Array.isArray(part); part = part[0]) shape.push(part.length);
  const first = flat.slice(0, 4).map(number).join(", ");
  return `[${shape.join("×")}] ${first}${flat.length > 4 ? ", …" : ""}`;
}

// --- checking as you type ---

async function check() {
  const mine = ++checks;
  let response;
  try {
    response = await postJob("/v1/validate", $("job").value);
  } catch (error) {
    if (mine === checks) showProblems($("check"), networkError(error));
    return;
  }
  if (mine !== checks) return;
  if (!response.ok) return showProblems($("check"), await errorOf(response));
  const job = await response.json();
  if (mine !== checks) return;
  const outputs = job.outputs.join(", ");
  showOk($("check"), `✓ ${job.name}: ${pointsText(job.points)}, outputs ${outputs}`);
}

let checkTimer = null;
function checkSoon() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(check, CHECK_DELAY_MS);
}

// --- running ---

function pointQuery(point) {
  return "point=" + encodeURIComponent(point);
}

function atPoint(result, values, point) {
  return result.points === 1 ? values : values[point];
}

function rowKind(result, name) {
  if (result.outputs.includes(name)) return "output";
  return result.grid.inputs.includes(name) ? "input" : "";
}

function pointsText(count) {
  return count === 1 ? "1 point" : `${count.toLocaleString("en")} points`;
}

function showTable(result, point) {
  const outputs = result.outputs;
  const head = element("tr");
  head.append(element("th", "name"), element("th", "value"));
  for (const out of outputs) head.append(element("th", `d${out}/d(name)`));
  const rows = [];
  for (const [name, values] of Object.entries(result.values)) {
    const row = element("tr", undefined, rowKind(result, name));
    row.append(element("th", name), element("td", valueText(atPoint(result, values, point))));
    for (const out of outputs) {
      const grad = result.grads[out][name]; // none where `name` is not in wrt
      const shown = grad === undefined ? "—" : valueText(atPoint(result, grad, point));
      row.append(element("td", shown));
      row.lastChild.title = `d${out}/d${name}`;
    }
    rows.push(row);
  }
  $("table").tHead.replaceChildren(head);
  $("table").tBodies[0].replaceChildren(...rows);
  const verify = result.verify;
  const where = result.points === 1 ? "" : ` at point ${point} of ${pointsText(result.points)}`;
  const checked = verify.ok ? "✓ verified against the reference"
    : `✗ ${verify.mismatches} mismatches with the reference`;
  $("summary").textContent = `${result.name}${where}: ${checked}`;
  $("summary").className = "summary " + (verify.ok ? "ok" : "bad");
}

async function showGraph(text, point) {
  const response = await postJob("/v1/graph?" + pointQuery(point), text);
  if (!response.ok) return hideImage("graph", "bad", await errorOf(response));
  showImage("graph", await response.blob());
  $("graph").alt = "the computational graph, each box with its value and gradient";
  $("graph-note").textContent = "Inputs in blue, the output in yellow; each box: its value, "
    + "and the output's gradient with respect to it.";
  $("graph-note").className = "note";
}

async function showPlot(text) {
  const response = await postJob("/v1/plot", text);
  if (!response.ok) return hideImage("plot", "none", await errorOf(response));
  showImage("plot", await response.blob());
  $("plot").alt = "values and gradients along the grid";
  $("plot-note").textContent = "";
}

function language() {
  return document.querySelector('input[name="lang"]:checked').value;
}

async function showExplanation() {
  if (!ran) return;
  const asked = language();
  const response = await postJob(`/v1/explain?lang=${asked}&${pointQuery(ran.point)}`, ran.text);
  if (asked !== language()) return; // switched again meanwhile: that answer is on its way
  if (!response.ok) {
    const error = await errorOf(response);
    $("explanation").textContent = error.message + (error.hint ? "\nhint: " + error.hint : "");
    return;
  }
  const explained = await response.json();
  $("explanation").textContent = explained.text;
  $("explanation").lang = asked;
}

async function run() {
  const text = $("job").value;
  const point = Math.max(0, Math.trunc(Number($("point").value)) || 0);
  $("run").disabled = true;
  showOk($("run-status"), "running…");
  try {
    const response = await postJob("/v1/run", text);
    if (!response.ok) return showProblems($("run-status"), await errorOf(response));
    const result = await response.json();
    if (point >= result.points) {
      return showProblems($("run-status"), {
        message: `point ${point} is outside the grid (it has ${pointsText(result.points)})`,
        hint: `choose a grid point from 0 to ${result.points - 1}` });
    }
    ran = { text, point };
    showTable(result, point);
    await Promise.all([showGraph(text, point), showPlot(text), showExplanation()]);
    showOk($("run-status"), `ran ${result.name}: ${pointsText(result.points)}`);
  } catch (error) {
    showProblems($("run-status"), networkError(error));
  } finally {
    $("run").disabled = false;
  }
}

// --- a batch job ---

async function submit() {
  $("submit").disabled = true;
  try {
    const response = await postJob("/v1/jobs", $("job").value);
    if (!response.ok) return showProblems($("run-status"), await errorOf(response));
    const queued = await response.json();
    showOk($("run-status"), `queued as job ${queued.id}`);
    $("batch").hidden = false;
    $("batch-result").hidden = true;
    showProgress(queued);
    const finished = await watch(queued.id);
    if (finished && finished.status === "done") await linkResult(queued.id);
  } catch (error) {
    showProblems($("run-status"), networkError(error));
  } finally {
    $("submit").disabled = false;
  }
}

function jobRoute(id, rest) {
  return `/v1/jobs/${encodeURIComponent(id)}${rest}`;
}

// Shows the job's progress until it finishes; returns its last status object (null: the
// stream ended first). Server-Sent Events read from a fetch, not an EventSource: an EventSource
// cannot send the Authorization header a token needs.
async function watch(id) {
  const response = await fetch(jobRoute(id, "/events"), { headers: headers() });
  if (!response.ok) {
    showProblems($("run-status"), await errorOf(response));
    return null;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = eventData(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (data !== null && showProgress(data, id)) {
        await reader.cancel();
        return data;
      }
    }
  }
  $("batch-state").textContent += ` (no more news: GET ${jobRoute(id, "")} tells its state)`;
  return null;
}

// An event's data lines, joined and read as JSON (null: a comment or keep-alive).
function eventData(block) {
  const lines = block.split("\n").filter((line) => line.startsWith("data:"));
  if (!lines.length) return null;
  const text = lines.map((line) => line.slice(5).replace(/^ /, "")).join("\n");
  try {
    return JSON.parse(text);
  } catch (_) {
    return { status: text };
  }
}

// Shows a job's state; true once it is finished.
function showProgress(job, id) {
  const progress = job.progress || {};
  const done = progress.points_done ?? 0;
  const total = progress.points_total ?? 0;
  $("batch-progress").max = total || 1;
  $("batch-progress").value = done;
  const counted = total ? `: ${done.toLocaleString("en")} of ${pointsText(total)}` : "";
  $("batch-state").textContent = `job ${job.id ?? id}, ${job.status}${counted}`;
  return FINISHED.has(job.status);
}

// The link works as it is without tokens; a link cannot carry a token, so with one the page
// fetches the result itself and links to that copy.
async function linkResult(id) {
  const link = $("batch-result");
  link.href = jobRoute(id, "/result");
  if ($("token").value.trim()) {
    const response = await fetch(link.href, { headers: headers() });
    if (!response.ok) return showProblems($("run-status"), await errorOf(response));
    if (blobUrls.result) URL.revokeObjectURL(blobUrls.result);
    blobUrls.result = URL.createObjectURL(await response.blob());
    link.href = blobUrls.result;
  }
  link.hidden = false;
}

// --- wiring ---

function start() {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").addEventListener("input", () => {
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    checkSoon();
  });
  $("job").addEventListener("input", checkSoon);
  $("run").addEventListener("click", run);
  $("submit").addEventListener("click", submit);
  for (const choice of document.querySelectorAll('input[name="lang"]')) {
    choice.addEventListener("change", showExplanation);
  }
  check();
}

start();
