// lookalike's search page: plain JavaScript, no build step, nothing loaded from elsewhere.
// It talks to the same server's REST API (/api/...) and keeps all state in this file.
//
// One scale everywhere a person reads a number: similarity in percent (100 - the engine's
// distance), and weights as each one's share of the total in percent.
"use strict";

(() => {
  const GRID = 16;
  const SKETCH_DELAY_MS = 400;   // a stroke, a key press or a slider move searches after this
  const LABELS = {
    color: "Colour", texture: "Texture", shape: "Shape", location: "Location",
    perceptual: "Colour names", deep: "Deep (CNN)",
    color_location: "Colour layout", texture_location: "Texture layout",
    shape_location: "Shape layout", image: "Image", text: "Text", sketch: "Sketch",
    layout: "Layout", colors: "Colours",
  };
  // Which field an API error belongs to, by the error code the server gives.
  const FIELD_OF_ERROR = {
    bad_url: "url", bad_image: "image", too_large: "image", not_found: "image", gone: "image",
    bad_filter: "where", bad_sketch: "sketch", bad_weights: "weights",
  };
  const FIELD_OF_PARAM = { top_k: "topk", threshold: "similarity", url: "url", id: "image",
    image: "image", text: "text", layout: "layout", where: "where", sketch: "sketch",
    weights: "weights" };
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title") {
        node.setAttribute(k, v);
      } else node[k] = v;
    }
    for (const child of children) node.append(child);
    return node;
  };
  const similarity = (distance) => Math.max(0, Math.min(100, 100 - Number(distance)));
  const percent = (value) => `${Math.round(value)}%`;

  const state = {
    info: null,
    palette: [],
    term: null,            // the colour being drawn with; null = eraser
    sketch: new Array(GRID * GRID).fill(null),
    cursor: 0,             // the sketch cell that has the keyboard (roving tabindex)
    query: null,           // {kind: "file", blob, label} | {kind: "id", id, label, thumb}
    previewUrl: null,
    searching: false,
    searchAgain: false,
    blobUrls: [],
    hits: [],              // the hits shown, in order (the viewer walks them)
    viewing: -1,           // index into hits of the image in the viewer
    feedback: false,       // the engine takes "more / less like this"
    more: new Map(),       // id -> name
    less: new Map(),
  };

  // -- talking to the server ------------------------------------------------------------------

  function apiKey() {
    return $("api-key").value.trim();
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = apiKey();
    if (key) headers.set("X-API-Key", key);
    const response = await fetch(path, { ...options, headers });
    const type = response.headers.get("content-type") || "";
    const body = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      let detail = body && body.detail;
      if (Array.isArray(detail)) {
        detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
      }
      const error = new Error(detail || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.code = body && body.error;
      error.params = ((body && body.errors) || []).map((e) => (e.loc || []).slice(-1)[0]);
      throw error;
    }
    return body;
  }

  // Thumbnails: plain <img src> unless reads need the key, then fetched with the header.
  async function setImage(img, url) {
    if (!(state.info && state.info.server.read_key_required)) {
      img.src = url;
      return;
    }
    try {
      const response = await fetch(url, { headers: { "X-API-Key": apiKey() } });
      if (!response.ok) return;
      const blobUrl = URL.createObjectURL(await response.blob());
      state.blobUrls.push(blobUrl);
      img.src = blobUrl;
    } catch (_) { /* the card keeps its placeholder */ }
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  // -- errors at their field ------------------------------------------------------------------

  const FIELD_INPUTS = {
    image: "dropzone", url: "url-input", text: "text-input", layout: "layout-input",
    where: "where-input", sketch: "sketch-grid", weights: "sliders", topk: "topk-input",
    similarity: "similarity-input",
  };

  function clearFieldErrors() {
    for (const [field, inputId] of Object.entries(FIELD_INPUTS)) {
      const box = $(`${field}-error`);
      box.hidden = true;
      box.textContent = "";
      $(inputId).removeAttribute("aria-invalid");
    }
  }

  function showFieldError(field, message) {
    const box = $(`${field}-error`);
    box.textContent = message;
    box.hidden = false;
    $(FIELD_INPUTS[field]).setAttribute("aria-invalid", "true");
    if ($("advanced").contains(box) && isPhone()) openDrawer(true);
  }

  // The field an error is about: from its code, its parameter, or the words it quotes.
  function fieldOfError(error, sent) {
    if (FIELD_OF_ERROR[error.code]) return FIELD_OF_ERROR[error.code];
    for (const param of error.params || []) if (FIELD_OF_PARAM[param]) return FIELD_OF_PARAM[param];
    if (error.code === "bad_query") {
      const candidates = ["layout", "where", "text"].filter((f) => sent[f]);
      const quoted = (error.message.match(/'([^']+)'/) || [])[1];
      const named = quoted && candidates.find((f) => sent[f].includes(quoted));
      if (named) return named;
      if (candidates.length === 1) return candidates[0];
    }
    return null;
  }

  // -- start-up -------------------------------------------------------------------------------

  async function loadInfo() {
    try {
      state.info = await api("/api/info");
    } catch (error) {
      $("stats").textContent = error.status === 401 || error.status === 403
        ? "this server needs an API key to search" : "server not reachable";
      showError(error.message);
      document.body.dataset.ready = "no";
      return false;
    }
    showError("");
    renderStats();
    renderSliders();
    renderPalette();
    const kinds = state.info.query_kinds;
    for (const section of document.querySelectorAll("[data-kind]")) {
      const kind = section.dataset.kind;
      const available = kinds[kind] !== false;
      section.classList.toggle("unavailable", !available);
      section.title = available ? "" : `${kind} queries need a newer engine on the server`;
      for (const input of section.querySelectorAll("input")) input.disabled = !available;
    }
    // "More / less like this" only when the engine says it takes them: never a dead button.
    state.feedback = Boolean(kinds.feedback || state.info.feedback);
    const server = state.info.server;
    $("upload-hint").textContent = server.writes_enabled
      ? `Needs the API key. Up to ${formatBytes(server.max_upload_bytes)} per image.`
      : "Uploads are disabled on this server (no API key configured).";
    $("upload-button").disabled = !server.writes_enabled;
    $("topk-input").max = server.max_top_k;
    document.body.dataset.ready = "yes";
    return true;
  }

  function renderStats() {
    const info = state.info;
    const attributes = Object.keys(info.collection.attributes);
    $("stats").textContent = `${info.collection.images.toLocaleString()} images · ` +
      `${attributes.length} attributes`;
    $("stats").title = attributes.join(", ");
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} bytes`;
    return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
  }

  // -- weights: raw slider positions, shown as each one's share of the total --------------------

  function renderSliders() {
    const box = $("sliders");
    box.replaceChildren();
    const defaults = state.info.collection.default_weights || {};
    for (const name of state.info.weights) {
      const value = Math.round(100 * (defaults[name] ?? 0));
      const id = `weight-${name}`;
      const input = el("input", {
        type: "range", min: 0, max: 100, step: 1, value, id, "data-weight": name,
      });
      const output = el("output", { class: "slider-value", htmlFor: id });
      input.addEventListener("input", () => {
        updateShares();
        if (hasQuery()) scheduleSearch(SKETCH_DELAY_MS);
      });
      box.append(el("div", { class: "slider" }, [
        el("label", { class: "slider-name", htmlFor: id, text: LABELS[name] || name }),
        input, output,
      ]));
    }
    updateShares();
  }

  function updateShares() {
    const inputs = [...document.querySelectorAll("input[data-weight]")];
    const total = inputs.reduce((sum, input) => sum + Number(input.value), 0);
    for (const input of inputs) {
      const share = total ? (100 * Number(input.value)) / total : 0;
      const text = percent(share);
      input.nextElementSibling.textContent = text;
      input.setAttribute("aria-valuetext", `${text} of the comparison`);
    }
  }

  function currentWeights() {
    const weights = {};
    for (const input of document.querySelectorAll("input[data-weight]")) {
      weights[input.dataset.weight] = Number(input.value) / 100;
    }
    return weights;
  }

  // -- the query image: drop, pick, paste, URL, or a result ------------------------------------

  // A new image starts a new query unless the user asked to refine the current one.
  function replaceOtherParts() {
    if ($("refine").checked) return;
    $("text-input").value = "";
    $("layout-input").value = "";
    clearSketch();
    state.more.clear();
    state.less.clear();
  }

  function setQueryFile(blob, label) {
    replaceOtherParts();
    state.query = { kind: "file", blob, label: label || "pasted image" };
    $("url-input").value = "";
    showPreview(URL.createObjectURL(blob));
    renderChips();
  }

  function setQueryId(id, label, thumbUrl) {
    replaceOtherParts();
    state.query = { kind: "id", id, label: `#${id} ${label}` };
    $("url-input").value = "";
    showPreview(null);
    setImage($("query-preview"), thumbUrl);
    renderChips();
  }

  function useUrl(url) {
    replaceOtherParts();
    clearQueryImage();
    $("url-input").value = url;
    renderChips();
    scheduleSearch(0);
  }

  function showPreview(objectUrl) {
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = objectUrl;
    const img = $("query-preview");
    if (objectUrl) img.src = objectUrl;
    img.alt = state.query ? `query image: ${state.query.label}` : "";
    img.hidden = false;
    $("dropzone").classList.add("has-image");
    $("dropzone-hint").hidden = true;
  }

  function clearQueryImage() {
    state.query = null;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    const img = $("query-preview");
    img.removeAttribute("src");
    img.hidden = true;
    $("dropzone").classList.remove("has-image");
    $("dropzone-hint").hidden = false;
  }

  function wireImageInputs() {
    const zone = $("dropzone");
    const picker = $("image-input");
    zone.addEventListener("click", () => picker.click());
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); picker.click(); }
    });
    picker.addEventListener("change", () => {
      if (picker.files.length) {
        setQueryFile(picker.files[0], picker.files[0].name);
        picker.value = "";
        scheduleSearch(0);
      }
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("over"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
      if (file) {
        setQueryFile(file, file.name);
        scheduleSearch(0);
        return;
      }
      const url = (event.dataTransfer.getData("text/uri-list") ||
                   event.dataTransfer.getData("text/plain") || "").split("\n")[0].trim();
      if (/^https?:\/\//i.test(url)) useUrl(url);
    });
    document.addEventListener("paste", (event) => {
      const items = [...(event.clipboardData ? event.clipboardData.items : [])];
      const image = items.find((item) => item.kind === "file" && item.type.startsWith("image/"));
      if (image) {
        event.preventDefault();
        setQueryFile(image.getAsFile(), "pasted image");
        scheduleSearch(0);
        return;
      }
      const target = event.target;
      if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
      const text = event.clipboardData ? event.clipboardData.getData("text").trim() : "";
      if (/^https?:\/\//i.test(text)) { event.preventDefault(); useUrl(text); }
    });
    $("url-input").addEventListener("change", () => {
      if ($("url-input").value.trim()) {
        replaceOtherParts();
        clearQueryImage();
      }
      renderChips();
    });
  }

  // -- the query parts, as chips ----------------------------------------------------------------

  function queryParts() {
    const parts = [];
    if (state.query) {
      parts.push({ part: "image", label: `Image: ${state.query.label}`, remove: clearQueryImage });
    } else if ($("url-input").value.trim()) {
      parts.push({ part: "image", label: `Image: ${shortUrl($("url-input").value.trim())}`,
        remove: () => { $("url-input").value = ""; } });
    }
    const text = $("text-input").value.trim();
    if (text && !$("text-input").disabled) {
      parts.push({ part: "text", label: `Text: ${text}`,
        remove: () => { $("text-input").value = ""; } });
    }
    const painted = state.sketch.filter(Boolean).length;
    if (painted && state.info && state.info.query_kinds.sketch) {
      parts.push({ part: "sketch", label: `Sketch: ${painted} cells`, remove: clearSketch });
    }
    const layout = $("layout-input").value.trim();
    if (layout && !$("layout-input").disabled) {
      parts.push({ part: "layout", label: `Layout: ${layout}`,
        remove: () => { $("layout-input").value = ""; } });
    }
    for (const [id, name] of state.more) {
      parts.push({ part: "more", label: `More like: ${name}`, remove: () => state.more.delete(id) });
    }
    for (const [id, name] of state.less) {
      parts.push({ part: "less", label: `Less like: ${name}`, remove: () => state.less.delete(id) });
    }
    const where = $("where-input").value.trim();
    if (where && !$("where-input").disabled) {
      parts.push({ part: "where", label: `Filter: ${where}`,
        remove: () => { $("where-input").value = ""; } });
    }
    return parts;
  }

  function shortUrl(url) {
    const tail = url.replace(/[?#].*$/, "").split("/").filter(Boolean).pop() || url;
    return tail.length > 40 ? `${tail.slice(0, 39)}…` : tail;
  }

  function hasQuery() {
    return queryParts().some((p) => p.part !== "where");
  }

  function renderChips() {
    const list = $("chips");
    list.replaceChildren();
    for (const { part, label, remove } of queryParts()) {
      const close = el("button", {
        type: "button", class: "chip-remove", text: "×", "aria-label": `Remove ${label}`,
      });
      close.addEventListener("click", () => {
        remove();
        renderChips();
        if (hasQuery()) scheduleSearch(0);
        else showEmpty();
        $("text-input").focus();
      });
      list.append(el("li", { class: "chip", "data-part": part }, [
        el("span", { class: "chip-label", text: label, title: label }), close,
      ]));
    }
    $("chips").closest(".chips-wrap").hidden = !list.children.length;
  }

  // -- sketch: pointer strokes, or the keyboard (arrows move, space paints) --------------------

  function renderPalette() {
    state.palette = state.info.palette;
    const box = $("palette");
    box.replaceChildren();
    const choices = [...state.palette, { term: null, hex: null }];
    for (const { term, hex } of choices) {
      const swatch = el("button", {
        type: "button", class: term ? "swatch" : "swatch eraser", role: "radio",
        title: term || "eraser (unspecified)", "aria-label": term || "eraser",
        "data-term": term || "",
      });
      if (hex) swatch.style.setProperty("--swatch", hex);
      swatch.addEventListener("click", () => selectTerm(term));
      box.append(swatch);
    }
    // The palette is one tab stop; arrows move the choice inside it (a radio group).
    box.addEventListener("keydown", (event) => {
      const swatches = [...box.querySelectorAll(".swatch")];
      const at = swatches.indexOf(document.activeElement);
      const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[event.key];
      let next = null;
      if (step) next = (at + step + swatches.length) % swatches.length;
      else if (event.key === "Home") next = 0;
      else if (event.key === "End") next = swatches.length - 1;
      if (next === null || at < 0) return;
      event.preventDefault();
      selectTerm(swatches[next].dataset.term || null);
      swatches[next].focus();
    });
    selectTerm(state.palette.length ? state.palette[5 % state.palette.length].term : null);
  }

  function selectTerm(term) {
    state.term = term;
    for (const swatch of document.querySelectorAll(".swatch")) {
      const on = (swatch.dataset.term || null) === term;
      swatch.classList.toggle("selected", on);
      swatch.setAttribute("aria-checked", on ? "true" : "false");
      swatch.tabIndex = on ? 0 : -1;
    }
  }

  function hexOf(term) {
    const found = state.palette.find((p) => p.term === term);
    return found ? found.hex : "transparent";
  }

  function cells() {
    return $("sketch-grid").querySelectorAll(".cell");
  }

  function buildSketchGrid() {
    const grid = $("sketch-grid");
    grid.style.setProperty("--n", GRID);
    for (let r = 0; r < GRID; r++) {
      const row = el("div", { class: "grid-row", role: "row" });
      for (let c = 0; c < GRID; c++) {
        row.append(el("div", {
          class: "cell", "data-row": r, "data-col": c, role: "gridcell", tabIndex: -1,
          "aria-label": `row ${r + 1}, column ${c + 1}: blank`,
        }));
      }
      grid.append(row);
    }
    cells()[0].tabIndex = 0;
    let painting = false;
    const paint = (target) => {
      if (!target || !target.classList || !target.classList.contains("cell")) return false;
      const index = Number(target.dataset.row) * GRID + Number(target.dataset.col);
      if (state.sketch[index] === state.term) return false;
      state.sketch[index] = state.term;
      drawCell(target, state.term);
      return true;
    };
    grid.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      painting = true;
      grid.setPointerCapture(event.pointerId);
      paint(event.target);
    });
    grid.addEventListener("pointermove", (event) => {
      if (painting) paint(document.elementFromPoint(event.clientX, event.clientY));
    });
    const stop = () => {
      if (!painting) return;
      painting = false;
      sketchChanged();
    };
    grid.addEventListener("pointerup", stop);
    grid.addEventListener("pointercancel", stop);
    grid.addEventListener("keydown", (event) => {
      const moves = { ArrowUp: -GRID, ArrowDown: GRID, ArrowLeft: -1, ArrowRight: 1 };
      const at = state.cursor;
      if (event.key in moves) {
        event.preventDefault();
        const col = at % GRID;
        if (event.key === "ArrowLeft" && col === 0) return;
        if (event.key === "ArrowRight" && col === GRID - 1) return;
        const next = at + moves[event.key];
        if (next >= 0 && next < GRID * GRID) moveCursor(next);
      } else if (event.key === "Home" || event.key === "End") {
        event.preventDefault();
        moveCursor(at - (at % GRID) + (event.key === "Home" ? 0 : GRID - 1));
      } else if (event.key === " " || event.key === "Enter") {
        event.preventDefault();
        if (paint(cells()[at])) sketchChanged();
      } else if (event.key === "Delete" || event.key === "Backspace") {
        event.preventDefault();
        const keep = state.term;
        state.term = null;
        const changed = paint(cells()[at]);
        state.term = keep;
        if (changed) sketchChanged();
      }
    });
    $("sketch-clear").addEventListener("click", () => {
      clearSketch();
      sketchChanged();
    });
    $("sketch-fill").addEventListener("click", () => {
      if (!state.term) return;
      cells().forEach((cell, i) => {
        if (state.sketch[i] === null) { state.sketch[i] = state.term; drawCell(cell, state.term); }
      });
      sketchChanged();
    });
  }

  function moveCursor(index) {
    const all = cells();
    all[state.cursor].tabIndex = -1;
    state.cursor = index;
    all[index].tabIndex = 0;
    all[index].focus();
  }

  function sketchChanged() {
    renderChips();
    if (hasQuery()) scheduleSearch(SKETCH_DELAY_MS);
    else showEmpty();
  }

  function clearSketch() {
    state.sketch.fill(null);
    for (const cell of cells()) drawCell(cell, null);
  }

  function drawCell(cell, term) {
    cell.style.background = term ? hexOf(term) : "";
    cell.classList.toggle("filled", Boolean(term));
    cell.title = term || "";
    const r = Number(cell.dataset.row) + 1;
    const c = Number(cell.dataset.col) + 1;
    cell.setAttribute("aria-label", `row ${r}, column ${c}: ${term || "blank"}`);
  }

  function sketchValue() {
    if (!state.sketch.some((t) => t)) return null;
    const rows = [];
    for (let r = 0; r < GRID; r++) rows.push(state.sketch.slice(r * GRID, (r + 1) * GRID));
    return rows;
  }

  // -- searching ------------------------------------------------------------------------------

  let timer = null;
  function scheduleSearch(delay) {
    clearTimeout(timer);
    timer = setTimeout(search, delay);
  }

  // Query windows apply to a new image (file or URL); a stored one is searched as stored.
  function byNewImage() {
    if (state.query) return state.query.kind === "file";
    return Boolean($("url-input").value.trim());
  }

  function buildForm() {
    const form = new FormData();
    const sent = {};
    if (state.query && state.query.kind === "file") {
      form.append("image", state.query.blob, state.query.label);
    } else if (state.query && state.query.kind === "id") {
      form.append("id", String(state.query.id));
    } else if ($("url-input").value.trim()) {
      form.append("url", $("url-input").value.trim());
    }
    for (const [field, id] of [["text", "text-input"], ["layout", "layout-input"],
      ["where", "where-input"]]) {
      const value = $(id).value.trim();
      if (value && !$(id).disabled) { form.append(field, value); sent[field] = value; }
    }
    const sketch = sketchValue();
    if (sketch && state.info.query_kinds.sketch) form.append("sketch", JSON.stringify(sketch));
    if (state.feedback) {
      if (state.more.size) form.append("more", JSON.stringify([...state.more.keys()]));
      if (state.less.size) form.append("less", JSON.stringify([...state.less.keys()]));
    }
    form.append("weights", JSON.stringify(currentWeights()));
    if ($("windows-check").checked && byNewImage()) form.append("windows", "true");
    form.append("top_k", String(Math.max(1, Number($("topk-input").value) || 24)));
    return { form, sent };
  }

  async function search() {
    if (!state.info) return;
    if (state.searching) { state.searchAgain = true; return; }
    renderChips();
    clearFieldErrors();
    if (!hasQuery()) {
      showError("Give something to search by: an image, a URL, text, a sketch or a layout.");
      return;
    }
    const { form, sent } = buildForm();
    state.searching = true;
    showError("");
    setStatus("searching…");
    document.body.classList.add("busy");
    const started = performance.now();
    try {
      const data = await api("/api/search", { method: "POST", body: form });
      markStale(false);
      renderResults(data, performance.now() - started);
    } catch (error) {
      setStatus("");
      const field = fieldOfError(error, sent);
      if (field) showFieldError(field, error.message);
      else showError(error.message);
      markStale(true);
    } finally {
      state.searching = false;
      document.body.classList.remove("busy");
      if (state.searchAgain) { state.searchAgain = false; search(); }
    }
  }

  // Results of an earlier query stay visible after an error, dimmed and labelled as such.
  function markStale(stale) {
    const shown = Boolean($("results").querySelector(".result"));
    $("results").classList.toggle("stale", stale && shown);
    $("stale-note").hidden = !(stale && shown);
  }

  function showEmpty() {
    state.hits = [];
    state.lastAnswer = null;
    markStale(false);
    setStatus("");
    $("results").replaceChildren($("empty-template").content.cloneNode(true));
  }

  // The engine's calibrated cut when it gives one (`likely`); until then the user's bar. The
  // bar is applied here, not sent as the engine's threshold, which would drop the rest.
  function likelyOf(hit) {
    if (hit.likely !== undefined && hit.likely !== null) return hit.likely;
    const bar = $("similarity-input").value.trim();
    if (bar === "" || !Number.isFinite(Number(bar))) return null;
    return similarity(hit.score) >= Number(bar);
  }

  function renderResults(data, elapsed) {
    state.lastAnswer = data;
    state.lastElapsed = elapsed;
    for (const url of state.blobUrls) URL.revokeObjectURL(url);
    state.blobUrls = [];
    const box = $("results");
    box.replaceChildren();
    const itself = new Set((data.query && data.query.same_as) || []);
    const hits = data.results.filter((hit) => !itself.has(hit.id) && !hit.is_query);
    state.hits = hits;
    let line = `${hits.length} shown of ${data.considered.toLocaleString()} compared · ` +
      `${Math.round(elapsed)} ms`;
    if (hits.length < data.results.length) line += " · the query image itself is left out";
    setStatus(line);
    renderExplain(data.explain || {});
    if (!hits.length) {
      box.append(el("div", { class: "empty" }, [
        el("p", { text: "Nothing matched. Lower the likely-match bar or loosen the filter." }),
      ]));
      return;
    }
    const hasCut = hits.some((hit) => likelyOf(hit) !== null && likelyOf(hit) !== undefined);
    const groups = hasCut
      ? [["likely", "Likely matches", hits.filter((h) => likelyOf(h))],
        ["others", "Other results", hits.filter((h) => !likelyOf(h))]]
      : [["all", null, hits]];
    for (const [name, title, members] of groups) {
      const grid = el("div", { class: "result-grid", role: "list" });
      for (const hit of members) {
        grid.append(resultCard(hit, hits.indexOf(hit), data.weights, Boolean(likelyOf(hit))));
      }
      const group = el("section", { class: `result-group ${name}`, "data-group": name });
      if (title) {
        group.setAttribute("aria-label", title);
        group.append(el("h3", { class: "group-title", text: `${title} (${members.length})` }));
        if (!members.length) {
          group.append(el("p", { class: "hint", text: name === "likely"
            ? "None of these is similar enough to be a likely match." : "None." }));
        }
      }
      group.append(grid);
      box.append(group);
    }
  }

  function resultCard(hit, index, weights, likely) {
    const match = similarity(hit.score);
    const img = el("img", { alt: "", loading: "lazy", decoding: "async" });
    setImage(img, hit.thumbnail);
    const open = el("button", {
      type: "button", class: "result-open",
      "aria-label": `${hit.name}, ${percent(match)} similar${likely ? ", likely match" : ""}; ` +
        "open the viewer",
    }, [
      el("div", { class: "thumb" }, [img, el("span", { class: "rank", text: `#${index + 1}` })]),
      el("div", { class: "meta" }, [
        el("div", { class: "score-line" }, [
          el("span", { class: "match", text: percent(match) }),
          el("span", { class: "match-word", text: likely ? "likely match" : "similar" }),
        ]),
        el("div", { class: "bar" }, [el("span")]),
        el("div", { class: "name", text: hit.name }),
      ]),
    ]);
    open.querySelector(".bar span").style.width = `${match}%`;
    const card = el("div", {
      class: likely ? "result likely" : "result", role: "listitem", "data-id": hit.id,
      "data-name": hit.name, "data-similarity": match.toFixed(1),
    }, [open]);
    if (state.feedback) card.append(feedbackButtons(hit));
    open.addEventListener("mouseenter", () => showBreakdown(open, hit, weights));
    open.addEventListener("focus", () => showBreakdown(open, hit, weights));
    open.addEventListener("mouseleave", hideBreakdown);
    open.addEventListener("blur", hideBreakdown);
    open.addEventListener("click", () => {
      hideBreakdown();
      openViewer(index);
    });
    return card;
  }

  function feedbackButtons(hit) {
    const make = (kind, text, other) => {
      const button = el("button", {
        type: "button", class: `ghost feedback ${kind}`, text,
        "aria-pressed": state[kind].has(hit.id) ? "true" : "false",
      });
      button.addEventListener("click", () => {
        if (state[kind].has(hit.id)) state[kind].delete(hit.id);
        else { state[kind].set(hit.id, hit.name); state[other].delete(hit.id); }
        renderChips();
        scheduleSearch(0);
      });
      return button;
    };
    return el("div", { class: "feedback-row" }, [
      make("more", "More like this", "less"), make("less", "Less like this", "more"),
    ]);
  }

  function showBreakdown(anchor, hit, weights) {
    const tip = $("tooltip");
    const rows = Object.entries(hit.breakdown || {}).map(([name, distance]) => {
      const alike = similarity(distance);
      const weight = weights && weights[name] !== undefined ? 100 * Number(weights[name]) : null;
      const bar = el("div", { class: "bar small" }, [el("span")]);
      bar.firstChild.style.width = `${alike}%`;
      return el("div", { class: "tip-row" }, [
        el("span", { class: "tip-name", text: LABELS[name] || name }),
        bar,
        el("span", { class: "tip-value", text: percent(alike) }),
        el("span", { class: "tip-weight", text: weight === null ? "" : percent(weight) }),
      ]);
    });
    const metadata = Object.entries(hit.metadata || {})
      .filter(([k]) => k !== "filename").slice(0, 4)
      .map(([k, v]) => el("div", { class: "tip-meta", text: `${k}: ${formatValue(v)}` }));
    tip.replaceChildren(
      el("div", { class: "tip-title", text: hit.name }),
      el("div", { class: "tip-sub", text: `${percent(similarity(hit.score))} similar · id ${hit.id}` }),
      el("div", { class: "tip-head" }, [
        el("span", { text: "attribute" }), el("span"), el("span", { text: "similar" }),
        el("span", { text: "share" }),
      ]),
      ...rows, ...metadata,
      el("div", { class: "tip-foot", text: "click to open" }),
    );
    tip.hidden = false;
    const box = anchor.getBoundingClientRect();
    const width = tip.offsetWidth;
    let left = box.right + 8;
    if (left + width > window.innerWidth - 8) left = Math.max(8, box.left - width - 8);
    left = Math.min(left, Math.max(8, window.innerWidth - width - 8));
    const top = Math.min(window.innerHeight - tip.offsetHeight - 8, Math.max(8, box.top));
    tip.style.left = `${left + window.scrollX}px`;
    tip.style.top = `${top + window.scrollY}px`;
  }

  function hideBreakdown() {
    $("tooltip").hidden = true;
  }

  function formatValue(value) {
    if (Array.isArray(value)) return value.join(", ");
    if (value && typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function renderExplain(explain) {
    const layout = explain.layout;
    $("layout-result").hidden = !(layout && layout.grid);
    if (layout && layout.grid) {
      drawMiniGrid($("layout-grid"), layout.grid);
      const all = layout.grid.flat();
      const named = all.filter(Boolean).length;
      $("layout-render").textContent = `${named} of ${all.length} cells specified`;
    }
    const text = explain.text;
    const textBox = $("text-explain");
    textBox.hidden = !text;
    if (text) {
      const word = (e) => (typeof e === "string" ? e : e.term);
      const terms = (text.terms || []).map(word);
      const extra = (text.expanded || []).map(word).filter((t) => !terms.includes(t));
      let line = terms.length ? `searched for: ${terms.join(", ")}` : "no searchable words";
      if (extra.length) {
        line += ` · also ${extra.slice(0, 4).join(", ")}`;
        if (extra.length > 4) line += ` and ${extra.length - 4} more`;
      }
      if (text.notes && text.notes.length) line += ` · ${text.notes.join("; ")}`;
      textBox.textContent = line;
    }
  }

  function drawMiniGrid(box, grid) {
    box.replaceChildren();
    box.style.setProperty("--n", grid.length);
    for (const row of grid) {
      for (const term of row) {
        const cell = el("div", { class: term ? "mini filled" : "mini", title: term || "any" });
        if (term) cell.style.background = hexOf(term);
        box.append(cell);
      }
    }
  }

  // -- the viewer: one result full size, its facts, and the way to the next one ----------------

  async function openViewer(index) {
    const dialog = $("viewer");
    state.viewing = index;
    const hit = state.hits[index];
    $("viewer-title").textContent = hit.name;
    $("viewer-pos").textContent = `${index + 1} of ${state.hits.length}`;
    $("viewer-prev").disabled = index === 0;
    $("viewer-next").disabled = index === state.hits.length - 1;
    const likely = likelyOf(hit);
    $("viewer-score").textContent = `${percent(similarity(hit.score))} similar` +
      (likely ? " · likely match" : "");
    const img = $("viewer-image");
    img.alt = hit.name;
    img.onerror = () => { img.onerror = null; setImage(img, `${hit.thumbnail}?size=512`); };
    // An image indexed from a URL redirects to elsewhere, which this page may not load.
    setImage(img, hit.url ? `${hit.thumbnail}?size=512` : hit.original);
    $("viewer-original").href = hit.url || hit.original;
    $("viewer-copy").hidden = true;
    renderFacts(hit, null);
    if (!dialog.open) dialog.showModal();
    try {
      const record = await api(`/api/images/${hit.id}`);
      if (state.viewing === index) renderFacts(hit, record);
    } catch (error) {
      if (state.viewing === index) renderFacts(hit, null, error.message);
    }
  }

  function renderFacts(hit, record, problem) {
    const facts = $("viewer-facts");
    facts.replaceChildren();
    const add = (term, value, className) => {
      if (value === undefined || value === null || value === "") return;
      facts.append(el("dt", { text: term }), el("dd", { class: className || "", text: value }));
    };
    add("id", String(hit.id));
    const path = (record && record.path) || hit.path || hit.url;
    add("path", path, "path");
    $("viewer-copy").hidden = !(path && navigator.clipboard);
    $("viewer-copy").dataset.path = path || "";
    if (record) {
      if (record.width) add("size", `${record.width} × ${record.height} px` +
        (record.size ? ` · ${formatBytes(record.size)}` : ""));
      add("format", record.format);
      if (record.index_key && record.index_key.length) add("index key", record.index_key.map((k) => k.term || k).join(" then "));
      const tags = (record.keywords || []).map((k) => k.keyword);
      add("tags", tags.join(", "));
      for (const [key, value] of Object.entries(record.metadata || {})) {
        if (key !== "keywords") add(key, formatValue(value));
      }
      add("sha256", record.sha256, "hash");
    } else {
      for (const [key, value] of Object.entries(hit.metadata || {})) add(key, formatValue(value));
    }
    const breakdown = Object.entries(hit.breakdown || {})
      .map(([name, d]) => `${LABELS[name] || name} ${percent(similarity(d))}`).join(" · ");
    add("similar by", breakdown);
    if (problem) add("note", problem);
  }

  function stepViewer(step) {
    const next = state.viewing + step;
    if (next >= 0 && next < state.hits.length) openViewer(next);
  }

  function wireViewer() {
    const dialog = $("viewer");
    $("viewer-prev").addEventListener("click", () => stepViewer(-1));
    $("viewer-next").addEventListener("click", () => stepViewer(1));
    $("viewer-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight" || event.key === "ArrowDown") {
        event.preventDefault();
        stepViewer(1);
      } else if (event.key === "ArrowLeft" || event.key === "ArrowUp") {
        event.preventDefault();
        stepViewer(-1);
      }
    });
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
    dialog.addEventListener("close", () => {
      const card = document.querySelectorAll(".result-open")[state.viewing];
      state.viewing = -1;
      if (card) card.focus();
    });
    $("viewer-similar").addEventListener("click", () => {
      const hit = state.hits[state.viewing];
      dialog.close();
      setQueryId(hit.id, hit.name, hit.thumbnail);
      search();
      $("results-panel").scrollIntoView({ block: "start" });
    });
    $("viewer-copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("viewer-copy").dataset.path);
        $("viewer-copy").textContent = "Copied";
      } catch (_) {
        $("viewer-copy").textContent = "Copy failed";
      }
      setTimeout(() => { $("viewer-copy").textContent = "Copy path"; }, 1500);
    });
  }

  // -- the drawer of advanced controls (phones) ----------------------------------------------

  function isPhone() {
    return window.matchMedia("(max-width: 860px)").matches;
  }

  function openDrawer(open) {
    $("advanced").classList.toggle("open", open);
    $("drawer-toggle").setAttribute("aria-expanded", open ? "true" : "false");
    document.body.classList.toggle("drawer-open", open && isPhone());
    if (open && isPhone()) $("drawer-close").focus();
  }

  // -- uploading ------------------------------------------------------------------------------

  async function upload() {
    const files = [...$("upload-input").files];
    const log = $("upload-log");
    if (!files.length) { showError("Pick one or more images to add."); return; }
    if (!apiKey()) { showError("Enter the API key (top right) to add images."); return; }
    let metadata = {};
    const raw = $("upload-metadata").value.trim();
    if (raw) {
      try { metadata = JSON.parse(raw); } catch (error) {
        showError(`metadata is not valid JSON: ${error.message}`);
        return;
      }
    }
    const keywords = $("upload-keywords").value.split(",").map((k) => k.trim()).filter(Boolean);
    if (keywords.length) metadata.keywords = keywords;
    showError("");
    $("upload-button").disabled = true;
    for (const file of files) { // one request per image: each stays under the size limit
      const item = el("li", { text: `${file.name}: uploading…` });
      log.prepend(item);
      const form = new FormData();
      form.append("files", file, file.name);
      if (Object.keys(metadata).length) form.append("metadata", JSON.stringify(metadata));
      try {
        const result = await api("/api/images", { method: "POST", body: form });
        const added = result.added[0];
        item.textContent = `${file.name}: added as #${added.id}`;
        item.className = "ok";
      } catch (error) {
        item.textContent = `${file.name}: ${error.message}`;
        item.className = "failed";
      }
    }
    $("upload-button").disabled = false;
    $("upload-input").value = "";
    try { state.info = await api("/api/info"); renderStats(); } catch (_) { /* keep old */ }
  }

  // -- wiring ---------------------------------------------------------------------------------

  function reset() {
    clearQueryImage();
    for (const id of ["url-input", "text-input", "layout-input", "where-input",
      "similarity-input"]) $(id).value = "";
    $("topk-input").value = 24;
    $("refine").checked = false;
    $("windows-check").checked = false;
    clearSketch();
    state.more.clear();
    state.less.clear();
    renderSliders();
    renderExplain({});
    renderChips();
    clearFieldErrors();
    showError("");
    showEmpty();
  }

  function init() {
    const saved = sessionStorage.getItem("lookalike-key");
    if (saved) $("api-key").value = saved;
    $("api-key").addEventListener("change", () => {
      sessionStorage.setItem("lookalike-key", apiKey());
      if (!state.info || state.info.server.read_key_required) loadInfo();
    });
    const template = el("template", { id: "empty-template" });
    template.content.append($("empty").cloneNode(true));
    document.body.append(template);
    buildSketchGrid();
    wireImageInputs();
    wireViewer();
    $("query-form").addEventListener("submit", (event) => { event.preventDefault(); search(); });
    for (const id of ["text-input", "layout-input", "where-input", "url-input"]) {
      $(id).addEventListener("keydown", (event) => {
        if (event.key === "Enter") { event.preventDefault(); search(); }
      });
      $(id).addEventListener("input", renderChips);
    }
    $("windows-check").addEventListener("change", () => {
      if (state.lastAnswer && byNewImage()) search();
    });
    $("similarity-input").addEventListener("input", () => {
      if (state.lastAnswer) renderResults(state.lastAnswer, state.lastElapsed);
    });
    $("reset-button").addEventListener("click", reset);
    $("upload-button").addEventListener("click", upload);
    $("drawer-toggle").addEventListener("click", () => {
      openDrawer(!$("advanced").classList.contains("open"));
    });
    $("drawer-close").addEventListener("click", () => {
      openDrawer(false);
      $("drawer-toggle").focus();
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && $("advanced").classList.contains("open") && isPhone()) {
        openDrawer(false);
      }
    });
    window.addEventListener("scroll", hideBreakdown, { passive: true });
    renderChips();
    loadInfo();
  }

  init();
})();
