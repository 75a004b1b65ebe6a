// mmsearch web UI. Every piece of data from the search service is put on the page with textContent or
// as an attribute value, never parsed as HTML markup. The page talks only to its own origin (/api/...).
"use strict";

(function () {
  const body = document.body;
  const MAX_UPLOAD_BYTES = Number(body.dataset.maxUploadBytes) || 8 * 1024 * 1024;
  const MAX_UPLOAD_MB = body.dataset.maxUploadMb || "8";
  const CLIENT_TIMEOUT_MS = Number(body.dataset.clientTimeoutMs) || 20000;
  const PINS_KEY = "mmsearch.pins";
  const CLIP_COMMAND = "mmsearch export clip --source <hub id|folder> --key clip";

  // ---- small DOM helpers --------------------------------------------------------------------------

  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null) continue;
        if (key === "text") node.textContent = String(value);
        else if (key === "class") node.className = value;
        else node.setAttribute(key, String(value));
      }
    }
    for (const child of children || []) {
      if (child) node.append(child);
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
  }

  function formatScore(value) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "–";
  }

  // Only http(s) URLs and same-origin paths may become an <img src> (the server checks this too).
  function safeImageUrl(url) {
    if (typeof url !== "string" || url === "") return null;
    if (url.startsWith("/") && !url.startsWith("//")) return url;
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  // ---- tabs -----------------------------------------------------------------------------------------

  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  const panels = {};
  for (const panel of document.querySelectorAll(".panel")) panels[panel.dataset.scene] = panel;

  function selectTab(scene, focus) {
    for (const tab of tabs) {
      const selected = tab.dataset.scene === scene;
      tab.setAttribute("aria-selected", selected ? "true" : "false");
      tab.tabIndex = selected ? 0 : -1;
      if (selected && focus) tab.focus();
    }
    for (const [name, panel] of Object.entries(panels)) panel.hidden = name !== scene;
    const input = panels[scene].querySelector('input[type="search"]');
    if (input && !focus) input.focus({ preventScroll: true });
  }

  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab.dataset.scene, false));
    tab.addEventListener("keydown", (event) => {
      const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
      if (!step) return;
      event.preventDefault();
      selectTab(tabs[(index + step + tabs.length) % tabs.length].dataset.scene, true);
    });
  });

  // ---- user id (kept in a cookie by the server) -------------------------------------------------------

  const userInput = document.getElementById("user-id");
  const USER_ID_RE = /^[A-Za-z0-9_.@-]{1,64}$/;

  function currentUserId() {
    const value = userInput.value.trim();
    return USER_ID_RE.test(value) ? value : null;
  }

  async function saveUserId() {
    const userId = currentUserId();
    userInput.setCustomValidity(userId ? "" : "1 to 64 letters, digits or . _ @ -");
    userInput.classList.toggle("invalid", !userId);
    if (!userId) {
      userInput.reportValidity();
      return;
    }
    try {
      await fetch("/api/user", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ userId }),
      });
    } catch (_) {
      // The next search sets the cookie too; nothing to tell the user here.
    }
  }

  userInput.addEventListener("change", saveUserId);
  document.getElementById("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveUserId();
  });

  // ---- debug panel ------------------------------------------------------------------------------------

  const debugToggle = document.getElementById("debug-toggle");
  const debugPanel = document.getElementById("debug-panel");
  const pinsBox = document.getElementById("pins");
  const layerNames = document.getElementById("layer-names");
  const experimentNames = document.getElementById("experiment-names");
  const knownLayers = new Set();
  const knownExperiments = new Set();

  function debugOn() {
    return !debugPanel.hidden;
  }

  debugToggle.addEventListener("click", () => {
    debugPanel.hidden = !debugPanel.hidden;
    debugToggle.setAttribute("aria-expanded", debugPanel.hidden ? "false" : "true");
    body.classList.toggle("with-debug", !debugPanel.hidden);
  });

  function readPins() {
    const pins = {};
    for (const row of pinsBox.querySelectorAll(".pin")) {
      const layer = row.querySelector(".pin-layer").value.trim();
      const experiment = row.querySelector(".pin-experiment").value.trim();
      if (layer && experiment) pins[layer] = experiment;
    }
    return pins;
  }

  function storePins() {
    try {
      localStorage.setItem(PINS_KEY, JSON.stringify(readPins()));
    } catch (_) {
      // Private mode: pins just don't survive a reload.
    }
  }

  function addPinRow(layer, experiment) {
    const layerInput = el("input", {
      class: "pin-layer", placeholder: "layer, e.g. match.qa", "aria-label": "Layer", list: "layer-names",
      maxlength: 100, spellcheck: "false",
    });
    const experimentInput = el("input", {
      class: "pin-experiment", placeholder: "experiment", "aria-label": "Experiment", list: "experiment-names",
      maxlength: 100, spellcheck: "false",
    });
    layerInput.value = layer || "";
    experimentInput.value = experiment || "";
    const remove = el("button", { type: "button", class: "ghost small", "aria-label": "Remove pin", text: "×" });
    const row = el("div", { class: "pin" }, [layerInput, experimentInput, remove]);
    remove.addEventListener("click", () => {
      row.remove();
      storePins();
    });
    layerInput.addEventListener("change", storePins);
    experimentInput.addEventListener("change", storePins);
    pinsBox.append(row);
    return row;
  }

  document.getElementById("add-pin").addEventListener("click", () => {
    addPinRow("", "").querySelector("input").focus();
  });

  try {
    const saved = JSON.parse(localStorage.getItem(PINS_KEY) || "{}");
    for (const [layer, experiment] of Object.entries(saved)) {
      if (typeof experiment === "string") addPinRow(layer, experiment);
    }
  } catch (_) {
    // Ignore a corrupt or unavailable store.
  }

  function remember(set, list, values) {
    for (const value of values) {
      if (set.has(value)) continue;
      set.add(value);
      list.append(el("option", { value }));
    }
  }

  function showDebug(result) {
    const served = result.experiments || {};
    const servedTable = document.getElementById("served-by");
    const servedBody = servedTable.querySelector("tbody");
    clear(servedBody);
    const layers = Object.keys(served);
    for (const layer of layers) {
      servedBody.append(el("tr", null, [el("td", { text: layer }), el("td", { text: served[layer] })]));
    }
    servedTable.hidden = layers.length === 0;
    const servedEmpty = document.getElementById("served-empty");
    servedEmpty.hidden = layers.length > 0;
    servedEmpty.textContent = "The search service did not say which experiments served this search.";
    remember(knownLayers, layerNames, layers);
    remember(knownExperiments, experimentNames, Object.values(served));

    const timings = Object.assign({}, result.timings || {});
    const list = document.getElementById("timings");
    clear(list);
    const entries = Object.entries(timings);
    if (typeof result.totalMs === "number") entries.push(["search service total", result.totalMs]);
    if (typeof result.uiMs === "number") entries.push(["round trip from the web UI", result.uiMs]);
    const longest = Math.max(1, ...entries.map(([, ms]) => ms));
    for (const [stage, ms] of entries) {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${Math.max(2, (100 * ms) / longest)}%`;
      list.append(
        el("li", null, [
          el("span", { class: "stage", text: stage }),
          el("span", { class: "ms", text: `${ms.toFixed(1)} ms` }),
          el("span", { class: "track" }, [bar]),
        ]),
      );
    }
    list.hidden = entries.length === 0;
    const timingsEmpty = document.getElementById("timings-empty");
    timingsEmpty.hidden = entries.length > 0;
  }

  // ---- states: searching, errors, nothing found, not configured ---------------------------------------

  function setState(panel, kind, message, detail) {
    const state = panel.querySelector('[data-role="state"]');
    clear(state);
    state.className = `state ${kind || ""}`;
    if (!kind) return;
    if (kind === "loading") state.append(el("span", { class: "spinner", "aria-hidden": "true" }));
    state.append(el("span", { class: "state-text", text: message }));
    if (detail) state.append(el("p", { class: "state-detail", text: detail }));
  }

  function showNotConfigured(panel, message) {
    const notice = panel.querySelector('[data-role="notice"]');
    const step = (text, command) => el("li", null, [el("span", { text }), el("pre", null, [el("code", { text: command })])]);
    clear(notice);
    if (panel.dataset.scene === "doc") {
      notice.append(
        el("h3", { text: "Document search is not configured yet" }),
        el("p", { text: "It searches a corpus of long documents (articles, abstracts, manuals), split into passages." }),
        el("ol", { class: "steps" }, [
          step("Ingest your documents (a BEIR corpus.jsonl, or any jsonl with --format jsonl --encode '{title}. {body}'):", "mmsearch ingest text --corpus documents --model minilm --input corpus.jsonl"),
        ]),
        message ? el("p", { class: "muted reason", text: `The search service says: ${message}` }) : null,
      );
      notice.hidden = false;
      return;
    }
    notice.append(
      el("h3", { text: "Image search is not configured yet" }),
      el("p", { text: "Text-to-image and search by image need a CLIP model in the model repository and an indexed photo collection." }),
      el("ol", { class: "steps" }, [
        step("Export a CLIP model (a Hugging Face hub id or a local folder):", CLIP_COMMAND),
        step("Ingest your photos:", "mmsearch ingest images --dir <photo folder> --corpus photos --model clip-image --base-url <where the photos are served>"),
        step("Restart the search service. With the local stack, one command does all of this:", "mmsearch local up --clip-source <hub id|folder>"),
      ]),
      message ? el("p", { class: "muted reason", text: `The search service says: ${message}` }) : null,
    );
    notice.hidden = false;
  }

  function showBanner(message) {
    const banner = document.getElementById("banner");
    if (!message) {
      banner.hidden = true;
      clear(banner);
      return;
    }
    clear(banner);
    banner.append(el("strong", { text: "Search is unavailable. " }), el("span", { text: message }));
    banner.hidden = false;
  }

  // ---- rendering results --------------------------------------------------------------------------------

  function scoreDetails(item) {
    const parts = [];
    const add = (label, map) => {
      for (const [name, value] of Object.entries(map || {})) parts.push(`${label} ${name} ${formatScore(value)}`);
    };
    add("retrieval", item.retrievalScores);
    add("ranking", item.rankingScores);
    parts.push(`final retrieval ${formatScore(item.finalRetrievalScore)}`);
    parts.push(`final ranking ${formatScore(item.finalRankingScore)}`);
    return parts.join(" · ");
  }

  // ---- feedback: what the user does with a result goes back to the search service (mmsearch ab report) ----

  // Fire and forget: a lost click must never get in the way of reading the results.
  async function sendFeedback(card, event) {
    const requestId = card.dataset.requestId;
    if (!requestId) return false;
    try {
      const response = await fetch("/api/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ requestId, userId: card.dataset.userId, itemId: card.dataset.id, event }),
      });
      return response.ok;
    } catch (_) {
      return false;
    }
  }

  // A result is "opened" once: its first open is the click that counts.
  function opened(card) {
    if (card.dataset.opened) return;
    card.dataset.opened = "1";
    sendFeedback(card, "click");
  }

  function feedbackButtons(card) {
    if (!card.dataset.requestId) return null;
    const status = el("span", { class: "fb-status", role: "status" });
    const make = (event, label) => {
      const button = el("button", { type: "button", class: `fb fb-${event}`, "aria-pressed": "false", text: label });
      button.addEventListener("click", async () => {
        if (button.getAttribute("aria-pressed") === "true") return;
        button.setAttribute("aria-pressed", "true");
        const ok = await sendFeedback(card, event);
        if (!ok) button.setAttribute("aria-pressed", "false");
        status.textContent = ok ? "Thanks" : "Not saved; try again";
      });
      return button;
    };
    return el("div", { class: "feedback" }, [make("like", "Helpful"), make("dislike", "Not helpful"), status]);
  }

  function resultCard(tag, className, item, result) {
    return el(tag, {
      class: className,
      "data-id": item.id,
      "data-request-id": result.requestId || null,
      "data-user-id": result.userId,
    });
  }

  // A text result's head: its rank, its title as the button that opens it (the result's click), its score.
  // `toggle(expand)` shows or hides what opening reveals.
  function textHead(card, item, rank, title, toggle) {
    const open = el("button", { type: "button", class: "open", "aria-expanded": "false", text: title });
    open.addEventListener("click", () => {
      const expand = open.getAttribute("aria-expanded") !== "true";
      open.setAttribute("aria-expanded", String(expand));
      toggle(expand);
      if (expand) opened(card);
    });
    return el("div", { class: "qa-head" }, [
      el("span", { class: "rank", text: String(rank) }),
      el("h3", { class: "question" }, [open]),
      el("span", { class: "score", title: "score", text: formatScore(item.score) }),
    ]);
  }

  function renderQa(list, items, start, result) {
    items.forEach((item, index) => {
      const chips = el("ul", { class: "chips", "aria-label": "Categories" });
      for (const category of item.category || []) chips.append(el("li", { class: "chip", text: category }));
      const card = resultCard("li", "qa-card", item, result);
      const answer = el("p", { class: "answer clamped", text: item.answer || "" });
      const title = item.question || (item.missingSummary ? `Document ${item.id} (not found in the store)` : "(no question)");
      // Answers show their first lines; opening one (the question is its button) is the result's click.
      const header = textHead(card, item, start + index + 1, title, (expand) => answer.classList.toggle("clamped", !expand));
      const parts = [
        header,
        answer,
        item.category && item.category.length ? chips : null,
        feedbackButtons(card),
        debugOn() ? el("p", { class: "score-details", text: `id ${item.id} · ${scoreDetails(item)}` }) : null,
      ];
      card.append(...parts.filter(Boolean));
      list.append(card);
    });
  }

  // The query's words (two letters or more), lower-cased: what a passage highlights.
  function queryWords(query) {
    return [...new Set((query || "").toLowerCase().match(/[\p{L}\p{N}]{2,}/gu) || [])];
  }

  // A passage with the query's words marked. Built from text nodes and <mark> elements, never from HTML: a
  // document's text cannot inject markup.
  function highlighted(text, words) {
    const p = el("p", { class: "passage" });
    if (!words.length) {
      p.append(document.createTextNode(text));
      return p;
    }
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(${escaped.join("|")})(?![\\p{L}\\p{N}])`, "giu");
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) p.append(document.createTextNode(text.slice(last, match.index)));
      p.append(el("mark", { text: match[0] }));
      last = match.index + match[0].length;
    }
    if (last < text.length) p.append(document.createTextNode(text.slice(last)));
    return p;
  }

  function renderDocs(list, items, start, result) {
    const words = queryWords(result.query);
    items.forEach((item, index) => {
      const card = resultCard("li", "qa-card doc-card", item, result);
      const title = item.title || (item.missingSummary ? `Document ${item.id} (not found in the store)` : `Document ${item.id}`);
      const passages = (item.passages || []).map((passage) => highlighted(passage.text, words));
      // The best passage shows; the others (if any) open with the title, which is the result's click.
      passages.slice(1).forEach((p) => { p.hidden = true; });
      const header = textHead(card, item, start + index + 1, title, (expand) => {
        passages.slice(1).forEach((p) => { p.hidden = !expand; });
      });
      const parts = [
        header,
        ...passages,
        feedbackButtons(card),
        debugOn() ? el("p", { class: "score-details", text: `id ${item.id} · ${scoreDetails(item)}` }) : null,
      ];
      card.append(...parts.filter(Boolean));
      list.append(card);
    });
  }

  const lightbox = document.getElementById("lightbox");
  const lightboxImg = document.getElementById("lightbox-img");
  const lightboxCaption = document.getElementById("lightbox-caption");

  function openLightbox(url, caption) {
    lightboxImg.src = url;
    lightboxImg.alt = caption;
    lightboxCaption.textContent = caption;
    if (typeof lightbox.showModal === "function") lightbox.showModal();
    else lightbox.setAttribute("open", "");
  }

  document.getElementById("lightbox-close").addEventListener("click", () => lightbox.close());
  lightbox.addEventListener("click", (event) => {
    if (event.target === lightbox) lightbox.close();
  });
  lightbox.addEventListener("close", () => lightboxImg.removeAttribute("src"));

  function renderImages(list, items, result) {
    for (const item of items) {
      const card = resultCard("li", "image-card", item, result);
      const name = item.name || `image ${item.id}`;
      const url = safeImageUrl(item.url);
      let media;
      if (url) {
        const img = el("img", { src: url, alt: name });
        img.addEventListener("error", () => {
          media.classList.add("broken");
          img.replaceWith(el("span", { class: "placeholder", text: "image unavailable" }));
        });
        media = el("button", { type: "button", class: "thumb", "aria-label": `Enlarge ${name}` }, [img]);
        media.addEventListener("click", () => {
          openLightbox(url, `${name} · score ${formatScore(item.score)}`);
          opened(card);
        });
      } else {
        media = el("div", { class: "thumb broken" }, [el("span", { class: "placeholder", text: "no image URL" })]);
      }
      const caption = el("figcaption", null, [
        el("span", { class: "name", text: name, title: name }),
        el("span", { class: "score", text: formatScore(item.score) }),
      ]);
      const details = debugOn() ? el("p", { class: "score-details", text: `id ${item.id} · ${scoreDetails(item)}` }) : null;
      card.append(...[el("figure", null, [media, caption]), feedbackButtons(card), details].filter(Boolean));
      list.append(card);
    }
  }

  // A page of results: the first replaces what was shown, "Show more" appends the next one.
  function render(panel, result) {
    const list = panel.querySelector('[data-role="results"]');
    const more = panel.querySelector('[data-role="more"]');
    const appending = (result.offset || 0) > 0;
    if (!appending) clear(list);
    const items = result.items || [];
    const shown = list.children.length + items.length;
    more.hidden = !(result.hasMore && items.length > 0);
    if (shown === 0) {
      const category = panel.querySelector('input[name="category"]');
      const filtered = category && category.value.trim();
      const advice = filtered ? "Nothing matched in that category. Check its spelling or clear the category filter." : "Nothing in the index matched. Try other words.";
      setState(panel, "empty", "No results.", advice);
    } else {
      const noun = shown === 1 ? "result" : "results";
      const end = appending && items.length === 0 ? " (no more)" : "";
      setState(panel, "done", `${shown} ${noun} in ${Math.round(result.uiMs)} ms${end}`);
      if (panel.dataset.scene === "qa") renderQa(list, items, list.children.length, result);
      else if (panel.dataset.scene === "doc") renderDocs(list, items, list.children.length, result);
      else renderImages(list, items, result);
    }
    showDebug(result);
  }

  // ---- talking to the UI's API -----------------------------------------------------------------------------

  async function callApi(url, init) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), CLIENT_TIMEOUT_MS);
    try {
      const response = await fetch(url, Object.assign({ signal: controller.signal }, init));
      let payload = null;
      try {
        payload = await response.json();
      } catch (_) {
        payload = null;
      }
      if (!response.ok) {
        const error = (payload && payload.error) || {};
        const fallback = response.status === 413 ? `That upload is larger than ${MAX_UPLOAD_MB} MB.` : `The web UI answered ${response.status}.`;
        return { error: { status: response.status, code: error.code || "http_error", message: error.message || fallback, hint: error.hint } };
      }
      return { result: payload };
    } catch (err) {
      if (err && err.name === "AbortError") {
        return { error: { code: "client_timeout", message: `No answer after ${Math.round(CLIENT_TIMEOUT_MS / 1000)} seconds. The search service may be overloaded; try again.` } };
      }
      return { error: { code: "offline", message: "The web UI cannot be reached. Check your connection or whether the UI is still running." } };
    } finally {
      clearTimeout(timer);
    }
  }

  const busy = new Set();
  const lastSearch = {};  // scene -> the request builder (offset -> fetch init) of the search on screen

  async function runSearch(panel, build, offset) {
    const scene = panel.dataset.scene;
    if (busy.has(scene)) return;
    busy.add(scene);
    lastSearch[scene] = build;
    const button = panel.querySelector('button[type="submit"]');
    const more = panel.querySelector('[data-role="more"]');
    button.disabled = true;
    more.disabled = true;
    panel.setAttribute("aria-busy", "true");
    setState(panel, "loading", offset ? "Loading more…" : "Searching…");
    try {
      const { result, error } = await callApi(`/api/search/${scene}`, build(offset));
      if (error) {
        const list = panel.querySelector('[data-role="results"]');
        clear(list);
        more.hidden = true;
        if (error.code === "not_configured") {
          showNotConfigured(panel, error.message);
          setState(panel, "");
        } else {
          const title = error.code === "unreachable" || error.code === "unavailable" ? "Search service unavailable" : "Search failed";
          // The banner above says how to fix an unreachable service; don't repeat it under the search box.
          const detail = error.code === "unreachable" ? "Try again once it is running (see above)." : error.message;
          setState(panel, "error", title, detail);
        }
        if (error.code === "unreachable") showBanner(error.message);
        return;
      }
      showBanner(null);
      panel.querySelector('[data-role="notice"]').hidden = true;
      render(panel, result);
    } finally {
      busy.delete(scene);
      button.disabled = false;
      more.disabled = false;
      panel.removeAttribute("aria-busy");
    }
  }

  for (const panel of document.querySelectorAll(".panel")) {
    panel.querySelector('[data-role="more"]').addEventListener("click", () => {
      const build = lastSearch[panel.dataset.scene];
      if (build) runSearch(panel, build, panel.querySelector('[data-role="results"]').children.length);
    });
  }

  for (const form of document.querySelectorAll("form.search")) {
    const panel = form.closest(".panel");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const userId = currentUserId();
      if (!userId) {
        userInput.setCustomValidity("1 to 64 letters, digits or . _ @ -");
        userInput.reportValidity();
        return;
      }
      if (panel.dataset.scene === "i2i") {
        const file = form.querySelector('input[type="file"]').files[0];
        if (!file) {
          setState(panel, "error", "Choose a photo first.");
          return;
        }
        if (file.size > MAX_UPLOAD_BYTES) {
          setState(panel, "error", `That photo is larger than ${MAX_UPLOAD_MB} MB.`);
          return;
        }
        const debug = debugOn();
        const pins = JSON.stringify(debug ? readPins() : {});
        runSearch(panel, (offset) => {
          const data = new FormData();
          data.append("image", file, file.name);
          data.append("userId", userId);
          data.append("debug", debug ? "true" : "false");
          data.append("pins", pins);
          data.append("offset", String(offset));
          return { method: "POST", body: data };
        }, 0);
        return;
      }
      const query = form.querySelector('input[name="query"]').value.trim();
      if (!query) {
        setState(panel, "error", "Type something to search for.");
        return;
      }
      const request = { query, userId, debug: debugOn(), pins: debugOn() ? readPins() : {} };
      const categoryInput = form.querySelector('input[name="category"]');
      if (categoryInput && categoryInput.value.trim()) request.category = categoryInput.value.trim();
      runSearch(panel, (offset) => ({
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign({}, request, { offset })),
      }), 0);
    });
  }

  // Preview the chosen photo (a blob: URL, allowed by the CSP's img-src) and search right away.
  const fileInput = document.getElementById("image-file");
  const preview = panels.i2i.querySelector('[data-role="preview"]');
  const dropzoneText = panels.i2i.querySelector('[data-role="dropzone-text"]');
  let previewUrl = null;
  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    if (!file) {
      preview.hidden = true;
      return;
    }
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.alt = file.name;
    preview.hidden = false;
    dropzoneText.textContent = `${file.name} · choose another photo`;
    panels.i2i.querySelector("form").requestSubmit();
  });

  // "Add photos": each chosen photo is sent on its own (the UI's upload limit is per photo) and is searchable once
  // the answer comes back.
  const addInput = document.getElementById("add-photos-file");
  const addStatus = panels.t2i.querySelector('[data-role="add-status"]');
  addInput.addEventListener("change", async () => {
    const files = Array.from(addInput.files || []);
    if (!files.length) return;
    addInput.disabled = true;
    let added = 0;
    const failed = [];
    for (const [index, file] of files.entries()) {
      addStatus.textContent = `Adding ${index + 1} of ${files.length}…`;
      if (file.size > MAX_UPLOAD_BYTES) {
        failed.push(`${file.name}: larger than ${MAX_UPLOAD_MB} MB`);
        continue;
      }
      const data = new FormData();
      data.append("photos", file, file.name);
      const { result, error } = await callApi("/api/photos", { method: "POST", body: data });
      if (error) failed.push(`${file.name}: ${error.message}`);
      else {
        added += result.added.length;
        for (const f of result.failed) failed.push(`${f.name}: ${f.message}`);
      }
    }
    addStatus.textContent = `Added ${added} photo${added === 1 ? "" : "s"}` + (failed.length ? `; not added: ${failed.join("; ")}` : "");
    addInput.value = "";
    addInput.disabled = false;
  });

  // ---- what the search service can do, before anyone searches -----------------------------------------

  async function loadStatus() {
    const { result } = await callApi("/api/status", { method: "GET" });
    if (!result) return;
    if (!result.search || !result.search.reachable) {
      showBanner((result.search && result.search.message) || "The search service cannot be reached.");
      return;
    }
    for (const scene of ["t2i", "i2i", "doc"]) {
      const state = (result.scenes || {})[scene];
      if (state && state.enabled === false) showNotConfigured(panels[scene], state.message);
    }
  }

  loadStatus();
})();
