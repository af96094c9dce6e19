// postergenre's page: choose a poster, see every genre's probability against its threshold, and
// each genre's Grad-CAM heatmap. It talks only to this server's JSON API (see /docs).
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  maxBytes: 10 * 2 ** 20,
  file: null,
  upload: 0, // bumped for each new poster, so that late answers about an old one are dropped
  selected: null,
  heatmaps: new Map(), // genre -> {url, evidence} of its heatmap for the current poster
  posterUrl: null,
};

// ---- talking to the API ------------------------------------------------------------------------

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (ignored) {
    // not JSON: fall through to the status line
  }
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

async function post(url, file) {
  const form = new FormData();
  form.append("file", file, file.name || "poster");
  try {
    return await fetch(url, { method: "POST", body: form });
  } catch (error) {
    throw new Error(`cannot reach the server (${error.message}); is postergenre serve still running?`);
  }
}

// ---- messages ----------------------------------------------------------------------------------

function showError(title, text) {
  $("error-title").textContent = title;
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function setStatus(text) {
  $("status").textContent = text || "";
}

// ---- the model ---------------------------------------------------------------------------------

async function loadModel() {
  let response;
  try {
    response = await fetch("/api/model");
  } catch (error) {
    $("model").textContent = "Cannot reach the server; is postergenre serve running?";
    return;
  }
  if (!response.ok) {
    $("model").textContent = `Cannot describe the model: ${await errorText(response)}`;
    return;
  }
  const model = await response.json();
  state.maxBytes = model.max_upload_mb * 2 ** 20;
  $("limit").textContent = formatNumber(model.max_upload_mb);
  $("model").replaceChildren(...modelLine(model));
}

function modelLine(model) {
  const parts = [strong(model.name), ` · ${model.backbone} backbone · ${model.genres.length} genres`];
  const metrics = model.metrics;
  if (metrics && metrics.macro_roc_auc != null) {
    let text = ` · test macro ROC AUC ${metrics.macro_roc_auc.toFixed(3)}`;
    if (metrics.macro_average_precision != null) text += `, macro AP ${metrics.macro_average_precision.toFixed(3)}`;
    if (metrics.n_samples) text += ` (${metrics.n_samples} posters)`;
    parts.push(text);
  } else {
    parts.push(" · no test metrics in this run");
  }
  return parts;
}

function strong(text) {
  const element = document.createElement("strong");
  element.textContent = text;
  return element;
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

// ---- choosing a poster -------------------------------------------------------------------------

async function choose(file) {
  if (!file) return;
  clearError();
  if (file.size > state.maxBytes) {
    const size = (file.size / 2 ** 20).toFixed(1);
    showError(`${file.name} is too large`, `It is ${size} MB; the limit is ${$("limit").textContent} MB. Choose a smaller poster.`);
    return;
  }
  const upload = ++state.upload;
  resetPoster(file);
  setStatus(`Scoring ${file.name}…`);
  try {
    const response = await post("/api/predict", file);
    if (upload !== state.upload) return;
    if (!response.ok) {
      $("result").hidden = true;
      setStatus("");
      showError(`Could not score ${file.name}`, await errorText(response));
      return;
    }
    const prediction = await response.json();
    if (upload !== state.upload) return;
    showPrediction(prediction);
    setStatus("");
  } catch (error) {
    if (upload !== state.upload) return;
    setStatus("");
    showError(`Could not score ${file.name}`, error.message);
  }
}

function resetPoster(file) {
  for (const heatmap of state.heatmaps.values()) URL.revokeObjectURL(heatmap.url);
  state.heatmaps.clear();
  if (state.posterUrl) URL.revokeObjectURL(state.posterUrl);
  state.file = file;
  state.selected = null;
  state.posterUrl = URL.createObjectURL(file);
  $("poster").src = state.posterUrl;
  $("heatmap").hidden = true;
  $("heatmap").removeAttribute("src");
  $("colour-key").hidden = true;
  $("notes").hidden = true;
  $("caption").textContent = "Click a genre to see where on the poster the model found it.";
}

// ---- the bars ----------------------------------------------------------------------------------

function showPrediction(prediction) {
  const rows = [...prediction.genres].sort((a, b) => b.probability - a.probability);
  $("bars").replaceChildren(...rows.map(barItem));
  $("summary").replaceChildren(...summary(prediction, rows));
  $("latency").textContent = `scored in ${Math.round(prediction.latency_ms)} ms`;
  $("result").hidden = false;
}

function summary(prediction, rows) {
  if (prediction.predicted.length === 0) {
    const best = rows[0];
    return [`No genre reaches its threshold; the closest is ${best.genre} (${percent(best.probability)} of ${percent(best.threshold)} needed).`];
  }
  const chips = rows.filter((row) => row.predicted).map((row) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = row.genre;
    return chip;
  });
  return ["Predicted: ", ...chips];
}

function barItem(row) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = row.predicted ? "bar predicted" : "bar";
  button.dataset.genre = row.genre;
  button.setAttribute("aria-pressed", "false");
  const decision = row.predicted ? "predicted" : "not predicted";
  button.title = `${row.genre}: probability ${percent(row.probability)}, threshold ${percent(row.threshold)} (${decision}). Click for its heatmap.`;

  const name = document.createElement("span");
  name.className = "name";
  name.textContent = row.genre;
  const track = document.createElement("span");
  track.className = "track";
  const fill = document.createElement("span");
  fill.className = "fill";
  fill.style.width = `${(row.probability * 100).toFixed(2)}%`;
  const tick = document.createElement("span");
  tick.className = "tick";
  tick.style.left = `${(row.threshold * 100).toFixed(2)}%`;
  track.append(fill, tick);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = percent(row.probability);

  button.append(name, track, value);
  button.addEventListener("click", () => toggleHeatmap(row));
  item.append(button);
  return item;
}

function percent(p) {
  return p >= 0.995 || p < 0.005 ? `${(p * 100).toFixed(1)}%` : `${Math.round(p * 100)}%`;
}

// ---- heatmaps ----------------------------------------------------------------------------------

async function toggleHeatmap(row) {
  clearError();
  if (state.selected === row.genre) {
    select(null);
    showPoster();
    return;
  }
  select(row.genre);
  const cached = state.heatmaps.get(row.genre);
  if (cached) {
    showHeatmap(row, cached);
    return;
  }
  const upload = state.upload;
  const button = barFor(row.genre);
  button.setAttribute("aria-busy", "true");
  setStatus(`Computing the ${row.genre} heatmap… (the first one loads the PyTorch model and takes a few seconds)`);
  try {
    const response = await post(`/api/explain?genre=${encodeURIComponent(row.genre)}`, state.file);
    if (upload !== state.upload) return;
    if (!response.ok) {
      showError(`No heatmap for ${row.genre}`, await errorText(response));
      if (state.selected === row.genre) select(null);
      return;
    }
    const heatmap = {
      url: URL.createObjectURL(await response.blob()),
      evidence: response.headers.get("X-Evidence"),
      notes: response.headers.get("X-Notes") || "",
    };
    if (upload !== state.upload) {
      URL.revokeObjectURL(heatmap.url);
      return;
    }
    state.heatmaps.set(row.genre, heatmap);
    if (state.selected === row.genre) showHeatmap(row, heatmap);
  } catch (error) {
    if (upload === state.upload) showError(`No heatmap for ${row.genre}`, error.message);
  } finally {
    button.removeAttribute("aria-busy");
    if (upload === state.upload) setStatus("");
  }
}

function barFor(genre) {
  return [...document.querySelectorAll(".bar")].find((button) => button.dataset.genre === genre);
}

function select(genre) {
  state.selected = genre;
  for (const button of document.querySelectorAll(".bar")) {
    button.setAttribute("aria-pressed", String(button.dataset.genre === genre));
  }
}

function showHeatmap(row, heatmap) {
  const image = $("heatmap");
  image.src = heatmap.url;
  image.alt = `Where the model sees ${row.genre} on the poster`;
  image.hidden = false;
  const numbers = `${percent(row.probability)}, threshold ${percent(row.threshold)}`;
  $("notes").textContent = heatmap.notes;
  $("notes").hidden = !heatmap.notes;
  if (heatmap.evidence === "none") {
    $("colour-key").hidden = true;
    $("caption").textContent = `${row.genre} (${numbers}): the model found no evidence for it anywhere on this poster, so its heatmap is empty.`;
  } else {
    $("colour-key").hidden = false;
    $("caption").textContent = `${row.genre}: where the model found it (${numbers}). Click it again for the plain poster.`;
  }
}

function showPoster() {
  $("heatmap").hidden = true;
  $("notes").hidden = true;
  $("colour-key").hidden = true;
  $("caption").textContent = "Click a genre to see where on the poster the model found it.";
}

// ---- wiring ------------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => {
    choose(input.files[0]);
    input.value = ""; // choosing the same file again still fires "change"
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  // A file dropped anywhere is taken, rather than the browser navigating away to it.
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) drop.classList.remove("dragging");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) choose(files[0]);
  });
  window.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) choose(file);
  });
}

wire();
loadModel();
