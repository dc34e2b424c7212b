// lookalike's search page: plain JavaScript, no build step, nothing loaded from elsewhere.
// It talks to the same server's REST API (/api/...) and keeps all state in this file.
"use strict";

(() => {
  const GRID = 16;
  const LABELS = {
    color: "Colour", texture: "Texture", shape: "Shape", location: "Location",
    perceptual: "Colour names", deep: "Deep (CNN)",
    color_location: "Colour layout", texture_location: "Texture layout",
    shape_location: "Shape layout", image: "Image", text: "Text", sketch: "Sketch",
    layout: "Layout",
  };
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

  const state = {
    info: null,
    palette: [],
    term: null,            // the colour being drawn with; null = eraser
    sketch: new Array(GRID * GRID).fill(null),
    query: null,           // {kind: "file", blob, label} | {kind: "id", id, label}
    previewUrl: null,
    lastSearchAt: 0,
    searching: false,
    searchAgain: false,
    hasSearched: false,
    blobUrls: [],
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
    document.body.dataset.ready = "yes";
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
    const server = state.info.server;
    $("upload-hint").textContent = server.writes_enabled
      ? `Needs the API key. Up to ${formatBytes(server.max_upload_bytes)} per image.`
      : "Uploads are disabled on this server (no API key configured).";
    $("upload-button").disabled = !server.writes_enabled;
    $("topk-input").max = server.max_top_k;
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
    return n >= 1048576 ? `${(n / 1048576).toFixed(0)} MiB` : `${Math.round(n / 1024)} KiB`;
  }

  function renderSliders() {
    const box = $("sliders");
    box.replaceChildren();
    const defaults = state.info.collection.default_weights || {};
    for (const name of state.info.weights) {
      const value = Math.round(100 * (defaults[name] ?? 0));
      const output = el("output", { class: "slider-value", text: (value / 100).toFixed(2) });
      const input = el("input", {
        type: "range", min: 0, max: 100, step: 1, value, "data-weight": name,
        "aria-label": `${LABELS[name] || name} weight`,
      });
      input.addEventListener("input", () => {
        output.textContent = (input.value / 100).toFixed(2);
        scheduleSearch(350);
      });
      input.addEventListener("change", () => scheduleSearch(0));
      box.append(el("label", { class: "slider" }, [
        el("span", { class: "slider-name", text: LABELS[name] || name }), input, output,
      ]));
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

  function setQueryFile(blob, label) {
    state.query = { kind: "file", blob, label: label || "pasted image" };
    $("url-input").value = "";
    showPreview(URL.createObjectURL(blob), state.query.label);
  }

  function setQueryId(id, label, thumbUrl) {
    state.query = { kind: "id", id, label };
    $("url-input").value = "";
    showPreview(null, `stored image #${id} · ${label}`);
    setImage($("query-preview"), thumbUrl);
  }

  function showPreview(objectUrl, caption) {
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = objectUrl;
    const img = $("query-preview");
    if (objectUrl) img.src = objectUrl;
    img.hidden = false;
    $("dropzone").classList.add("has-image");
    $("dropzone-hint").hidden = true;
    $("clear-image").hidden = false;
    $("query-caption").textContent = caption;
    $("query-caption").hidden = false;
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
    $("clear-image").hidden = true;
    $("query-caption").hidden = true;
  }

  function wireImageInputs() {
    const zone = $("dropzone");
    const picker = $("image-input");
    zone.addEventListener("click", (event) => {
      if (event.target.id !== "clear-image") picker.click();
    });
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
    $("clear-image").addEventListener("click", (event) => {
      event.stopPropagation();
      clearQueryImage();
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
      if ($("url-input").value.trim()) clearQueryImage();
    });
  }

  function useUrl(url) {
    clearQueryImage();
    $("url-input").value = url;
    scheduleSearch(0);
  }

  // -- sketch ---------------------------------------------------------------------------------

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
    selectTerm(state.palette.length ? state.palette[5 % state.palette.length].term : null);
  }

  function selectTerm(term) {
    state.term = term;
    for (const swatch of document.querySelectorAll(".swatch")) {
      const on = (swatch.dataset.term || null) === term;
      swatch.classList.toggle("selected", on);
      swatch.setAttribute("aria-checked", on ? "true" : "false");
    }
  }

  function hexOf(term) {
    const found = state.palette.find((p) => p.term === term);
    return found ? found.hex : "transparent";
  }

  function buildSketchGrid() {
    const grid = $("sketch-grid");
    grid.style.setProperty("--n", GRID);
    for (let r = 0; r < GRID; r++) {
      for (let c = 0; c < GRID; c++) {
        grid.append(el("div", {
          class: "cell", "data-row": r, "data-col": c, role: "gridcell",
        }));
      }
    }
    let painting = false;
    const paint = (target) => {
      if (!target || !target.classList || !target.classList.contains("cell")) return;
      const index = Number(target.dataset.row) * GRID + Number(target.dataset.col);
      if (state.sketch[index] === state.term) return;
      state.sketch[index] = state.term;
      drawCell(target, state.term);
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
      scheduleSearch(400);
    };
    grid.addEventListener("pointerup", stop);
    grid.addEventListener("pointercancel", stop);
    $("sketch-clear").addEventListener("click", () => {
      state.sketch.fill(null);
      for (const cell of grid.children) drawCell(cell, null);
    });
    $("sketch-fill").addEventListener("click", () => {
      if (!state.term) return;
      [...grid.children].forEach((cell, i) => {
        if (state.sketch[i] === null) { state.sketch[i] = state.term; drawCell(cell, state.term); }
      });
      scheduleSearch(0);
    });
  }

  function drawCell(cell, term) {
    cell.style.background = term ? hexOf(term) : "";
    cell.classList.toggle("filled", Boolean(term));
    cell.title = term || "";
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
    if (!state.hasSearched && delay > 0) return; // sliders only re-rank an existing search
    clearTimeout(timer);
    timer = setTimeout(search, delay);
  }

  function buildForm() {
    const form = new FormData();
    let kinds = 0;
    if (state.query && state.query.kind === "file") {
      form.append("image", state.query.blob, state.query.label);
      kinds++;
    } else if (state.query && state.query.kind === "id") {
      form.append("id", String(state.query.id));
      kinds++;
    } else if ($("url-input").value.trim()) {
      form.append("url", $("url-input").value.trim());
      kinds++;
    }
    const text = $("text-input").value.trim();
    if (text && !$("text-input").disabled) { form.append("text", text); kinds++; }
    const sketch = sketchValue();
    if (sketch && state.info.query_kinds.sketch) {
      form.append("sketch", JSON.stringify(sketch));
      kinds++;
    }
    const layout = $("layout-input").value.trim();
    if (layout && !$("layout-input").disabled) { form.append("layout", layout); kinds++; }
    const where = $("where-input").value.trim();
    if (where && !$("where-input").disabled) form.append("where", where);
    form.append("weights", JSON.stringify(currentWeights()));
    form.append("top_k", String(Math.max(1, Number($("topk-input").value) || 24)));
    const threshold = $("threshold-input").value.trim();
    if (threshold !== "") form.append("threshold", threshold);
    return kinds ? form : null;
  }

  async function search() {
    if (!state.info) return;
    if (state.searching) { state.searchAgain = true; return; }
    const form = buildForm();
    if (!form) {
      showError("Give something to search by: an image, a URL, text, a sketch or a layout.");
      return;
    }
    state.searching = true;
    state.hasSearched = true;
    showError("");
    setStatus("searching…");
    document.body.classList.add("busy");
    const started = performance.now();
    try {
      const data = await api("/api/search", { method: "POST", body: form });
      renderResults(data, performance.now() - started);
    } catch (error) {
      setStatus("");
      showError(error.message);
    } finally {
      state.searching = false;
      document.body.classList.remove("busy");
      if (state.searchAgain) { state.searchAgain = false; search(); }
    }
  }

  function renderResults(data, elapsed) {
    for (const url of state.blobUrls) URL.revokeObjectURL(url);
    state.blobUrls = [];
    const box = $("results");
    box.replaceChildren();
    const hits = data.results;
    setStatus(`${hits.length} of ${data.considered.toLocaleString()} compared · ` +
      `${Math.round(elapsed)} ms`);
    renderExplain(data.explain || {});
    if (!hits.length) {
      box.append(el("div", { class: "empty" }, [
        el("p", { text: "Nothing matched. Loosen the threshold or the filter." }),
      ]));
      return;
    }
    hits.forEach((hit, index) => box.append(resultCard(hit, index + 1, data.weights)));
  }

  function resultCard(hit, rank, weights) {
    const match = Math.max(0, 100 - hit.score);
    const img = el("img", { alt: hit.name, loading: "lazy", decoding: "async" });
    setImage(img, hit.thumbnail);
    const card = el("button", {
      type: "button", class: "result", "data-id": hit.id, "data-name": hit.name,
      "data-score": hit.score, title: "",
      "aria-label": `${hit.name}, match ${match.toFixed(1)} percent; search by this image`,
    }, [
      el("div", { class: "thumb" }, [img, el("span", { class: "rank", text: `#${rank}` })]),
      el("div", { class: "meta" }, [
        el("div", { class: "score-line" }, [
          el("span", { class: "match", text: `${match.toFixed(1)}%` }),
          el("span", { class: "score", text: `score ${hit.score.toFixed(1)}` }),
        ]),
        el("div", { class: "bar" }, [el("span")]),
        el("div", { class: "name", text: hit.name }),
      ]),
    ]);
    card.querySelector(".bar span").style.width = `${match}%`;
    if (hit.similar === true) card.classList.add("similar");
    card.addEventListener("mouseenter", () => showBreakdown(card, hit, weights));
    card.addEventListener("focus", () => showBreakdown(card, hit, weights));
    card.addEventListener("mouseleave", hideBreakdown);
    card.addEventListener("blur", hideBreakdown);
    card.addEventListener("click", () => {
      hideBreakdown();
      setQueryId(hit.id, hit.name, hit.thumbnail);
      search();
    });
    return card;
  }

  function showBreakdown(card, hit, weights) {
    const tip = $("tooltip");
    const rows = Object.entries(hit.breakdown || {}).map(([name, distance]) => {
      const similarity = Math.max(0, 100 - distance);
      const weight = weights && weights[name] !== undefined ? Number(weights[name]) : null;
      const bar = el("div", { class: "bar small" }, [el("span")]);
      bar.firstChild.style.width = `${similarity}%`;
      return el("div", { class: "tip-row" }, [
        el("span", { class: "tip-name", text: LABELS[name] || name }),
        bar,
        el("span", { class: "tip-value", text: similarity.toFixed(0) }),
        el("span", { class: "tip-weight", text: weight === null ? "" : `×${weight.toFixed(2)}` }),
      ]);
    });
    const metadata = Object.entries(hit.metadata || {})
      .filter(([k]) => k !== "filename").slice(0, 4)
      .map(([k, v]) => el("div", { class: "tip-meta", text: `${k}: ${formatValue(v)}` }));
    tip.replaceChildren(
      el("div", { class: "tip-title", text: hit.name }),
      el("div", { class: "tip-sub", text: `id ${hit.id} · score ${hit.score.toFixed(2)} ` +
        "(0 = identical)" }),
      el("div", { class: "tip-head" }, [
        el("span", { text: "attribute" }), el("span"), el("span", { text: "match" }),
        el("span", { text: "weight" }),
      ]),
      ...rows, ...metadata,
      el("div", { class: "tip-foot", text: "click to search by this image" }),
    );
    tip.hidden = false;
    const box = card.getBoundingClientRect();
    const width = tip.offsetWidth;
    let left = box.right + 8;
    if (left + width > window.innerWidth - 8) left = Math.max(8, box.left - width - 8);
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
      const cells = layout.grid.flat();
      const named = cells.filter(Boolean).length;
      $("layout-render").textContent = `${named} of ${cells.length} cells specified`;
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
      "threshold-input"]) $(id).value = "";
    $("topk-input").value = 24;
    state.sketch.fill(null);
    for (const cell of $("sketch-grid").children) drawCell(cell, null);
    renderSliders();
    renderExplain({});
    state.hasSearched = false;
    showError("");
    setStatus("");
    $("results").replaceChildren($("empty-template").content.cloneNode(true));
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
    $("query-form").addEventListener("submit", (event) => { event.preventDefault(); search(); });
    for (const id of ["text-input", "layout-input", "where-input", "url-input"]) {
      $(id).addEventListener("keydown", (event) => {
        if (event.key === "Enter") { event.preventDefault(); search(); }
      });
    }
    $("reset-button").addEventListener("click", reset);
    $("upload-button").addEventListener("click", upload);
    window.addEventListener("scroll", hideBreakdown, { passive: true });
    loadInfo();
  }

  init();
})();
