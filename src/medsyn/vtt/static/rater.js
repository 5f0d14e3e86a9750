"use strict";
// The rater page: shows the rater's next image (GET /api/r/TOKEN/next), lets them zoom and set a window,
// and sends one final answer per image (POST .../answer). The token is read from the address bar, so the page
// itself is the same for every rater. The image id stays in this script: it is never written into the page.
(() => {
  const token = location.pathname.split("/")[2] || "";
  const api = (path) => `/api/r/${token}/${path}`; // the token is already URL-encoded in the address
  const $ = (id) => document.getElementById(id);
  const CONFIDENCE_KEYS = ["z", "x", "c", "v", "b"]; // a row of their own: digits are the class keys
  const MAX_ZOOM = 32;
  const DEFAULT_WINDOW = { level: 128, width: 256 }; // the identity mapping of 8-bit grey values

  const state = { image: null, askClass: false, classes: [], cls: null, confidence: null, source: null };
  const view = { zoom: 1, panX: 0, panY: 0, smooth: false, ...DEFAULT_WINDOW };
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  const windowed = document.createElement("canvas"); // the image after the window, at its own size
  const wctx = windowed.getContext("2d");

  class Stopped extends Error {} // the page has switched to its "not valid" message: stop what was running

  function setState(name) {
    document.body.dataset.state = name;
    const ready = name === "ready";
    for (const id of ["answer-real", "answer-synthetic"]) $(id).disabled = !ready;
  }

  function status(text) { $("status").textContent = text; }
  function hint(text) { $("hint").textContent = text; }

  function showInvalid() {
    for (const el of document.querySelectorAll("header, main, #done")) el.hidden = true;
    $("invalid").hidden = false;
    setState("invalid");
  }

  function showDone(total) {
    $("reader").hidden = true;
    $("done-total").textContent = String(total);
    showProgress(total, total, true);
    $("done").hidden = false;
    status("");
    setState("done");
  }

  function showProgress(number, total, finished = false) {
    $("number").textContent = String(number);
    $("total").textContent = String(total);
    document.body.dataset.number = String(number);
    const answered = finished ? total : number - 1;
    $("bar-fill").style.width = `${total ? (100 * answered) / total : 0}%`;
  }

  // One request; a 403 ends the session on the page, a server error is thrown so that `retrying` tries again.
  async function call(path, options = {}) {
    const response = await fetch(api(path), { cache: "no-store", referrerPolicy: "no-referrer", ...options });
    if (response.status === 403) { showInvalid(); throw new Stopped(); }
    if (response.status >= 500) throw new Error(`server error ${response.status}`);
    return response;
  }

  // Retries a lost connection or a server error until it works: a rater should never lose their place.
  async function retrying(request) {
    for (let delay = 500; ; delay = Math.min(2 * delay, 8000)) {
      try {
        const response = await request();
        status("");
        return response;
      } catch (err) {
        if (err instanceof Stopped) throw err;
        status("Connection lost; retrying\u2026");
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  // An unexpected failure (an image the browser cannot decode) is shown, never left as a silent stall.
  function guard(promise) {
    promise.catch((err) => {
      if (!(err instanceof Stopped)) status(`Something went wrong (${err.message}); reload the page to go on.`);
    });
  }

  async function loadNext() {
    setState("loading");
    state.source = null;
    draw(); // never leave the previous image on screen while the next one loads
    const data = await (await retrying(() => call("next"))).json();
    if (data.done) { showDone(data.total); return; }
    state.image = data.image;
    setClasses(Boolean(data.ask_class), data.classes || []);
    const blob = await (await retrying(() => call(`image/${encodeURIComponent(data.image)}`))).blob();
    const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const decode = document.createElement("canvas");
    decode.width = bitmap.width;
    decode.height = bitmap.height;
    const dctx = decode.getContext("2d", { willReadFrequently: true });
    dctx.drawImage(bitmap, 0, 0);
    state.source = dctx.getImageData(0, 0, bitmap.width, bitmap.height);
    choose(null, null);
    hint("");
    applyWindow();
    showProgress(data.number, data.total);
    setState("ready");
  }

  async function submit(synthetic) {
    if (document.body.dataset.state !== "ready") return;
    if (state.askClass && state.cls === null) {
      hint(`Choose the class first: ${classKeysText()}.`);
      return;
    }
    setState("sending");
    const body = JSON.stringify({ image: state.image, synthetic, class: state.askClass ? state.cls : null,
                                  confidence: state.confidence });
    const response = await retrying(() => call("answer", {
      method: "POST", headers: { "Content-Type": "application/json" }, body }));
    if (response.status === 422) {
      hint((await response.json()).error || "The answer was not accepted.");
      setState("ready");
      return;
    }
    // 200: saved. 409: answered already (a retried request that had arrived, or another window): go on.
    await loadNext();
  }

  // ---- answer choices -------------------------------------------------------------------------------------
  function classKeysText() {
    const n = Math.min(state.classes.length, 9);
    return n > 1 ? `keys 1\u2013${n}` : "key 1";
  }

  function setClasses(askClass, classes) {
    if (askClass === state.askClass && JSON.stringify(classes) === JSON.stringify(state.classes)) return;
    state.askClass = askClass;
    state.classes = classes;
    const box = $("classes");
    box.replaceChildren();
    classes.forEach((name, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.class = String(index);
      if (index < 9) {
        const key = document.createElement("kbd");
        key.textContent = String(index + 1);
        button.append(key);
      }
      button.append(document.createTextNode(name)); // text, never HTML: names come from the study's settings
      button.addEventListener("click", (event) => { event.currentTarget.blur(); choose(index, state.confidence); });
      box.append(button);
    });
    $("class-group").hidden = !askClass;
    $("keys-class").hidden = !askClass;
    $("keys-class-last").textContent = String(Math.min(classes.length, 9));
    $("keys-order").textContent = askClass
      ? "Answers are final: pick the class (and a confidence if you like), then R or S."
      : "Answers are final: pick a confidence if you like, then R or S.";
  }

  function choose(cls, confidence) {
    state.cls = cls;
    state.confidence = confidence;
    for (const b of $("classes").children) b.classList.toggle("chosen", Number(b.dataset.class) === cls);
    for (const b of $("confidence").children) b.classList.toggle("chosen", Number(b.dataset.confidence) === confidence);
    if (cls !== null) hint("");
  }

  // ---- the image: window/level, zoom, pan -----------------------------------------------------------------
  function applyWindow() {
    $("level").value = view.level;
    $("width").value = view.width;
    $("level-value").textContent = String(view.level);
    $("width-value").textContent = String(view.width);
    if (!state.source) { draw(); return; }
    // grey values lo..hi are spread over black..white; below is black, above is white
    const lo = view.level - view.width / 2;
    const span = Math.max(view.width - 1, 1e-3);
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = Math.round(((v - lo) * 255) / span);
    const { width, height, data } = state.source;
    const out = new ImageData(width, height);
    const d = out.data;
    for (let i = 0; i < data.length; i += 4) {
      d[i] = lut[data[i]]; d[i + 1] = lut[data[i + 1]]; d[i + 2] = lut[data[i + 2]]; d[i + 3] = 255;
    }
    windowed.width = width;
    windowed.height = height;
    wctx.putImageData(out, 0, 0);
    draw();
  }

  function setWindow(level, width) {
    view.level = Math.round(Math.min(255, Math.max(0, level)));
    view.width = Math.round(Math.min(256, Math.max(1, width)));
    applyWindow();
  }

  function geometry() {
    const rect = canvas.getBoundingClientRect();
    const w = state.source ? state.source.width : 1;
    const h = state.source ? state.source.height : 1;
    const fit = Math.min(rect.width / w, rect.height / h);
    return { rect, w, h, scale: fit * view.zoom };
  }

  function clampPan() {
    const { rect, w, h, scale } = geometry(); // keep the image over the view: no panning into empty space
    const limX = Math.max(0, (w * scale - rect.width) / 2);
    const limY = Math.max(0, (h * scale - rect.height) / 2);
    view.panX = Math.min(limX, Math.max(-limX, view.panX));
    view.panY = Math.min(limY, Math.max(-limY, view.panY));
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const { rect, w, h, scale } = geometry();
    const cw = Math.round(rect.width * dpr);
    const ch = Math.round(rect.height * dpr);
    if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, cw, ch);
    $("zoom-level").textContent = state.source ? `\u00d7${scale.toFixed(1)}` : "";
    if (!state.source) return;
    ctx.imageSmoothingEnabled = view.smooth;
    ctx.imageSmoothingQuality = "high";
    const x = (rect.width - w * scale) / 2 + view.panX;
    const y = (rect.height - h * scale) / 2 + view.panY;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.drawImage(windowed, x, y, w * scale, h * scale);
  }

  // Zoom by `factor` keeping the image point under (px, py) (CSS pixels from the view's centre) in place.
  function zoomBy(factor, px = 0, py = 0) {
    const zoom = Math.min(MAX_ZOOM, Math.max(1, view.zoom * factor));
    view.panX = px - ((px - view.panX) * zoom) / view.zoom;
    view.panY = py - ((py - view.panY) * zoom) / view.zoom;
    view.zoom = zoom;
    clampPan();
    draw();
  }

  function fit() { view.zoom = 1; view.panX = 0; view.panY = 0; draw(); }

  function setSmooth(smooth) { view.smooth = smooth; $("smooth").checked = smooth; draw(); }

  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left - rect.width / 2,
           event.clientY - rect.top - rect.height / 2);
  }, { passive: false });

  // Left drag pans; right drag (or shift + left drag) sets the window as on a PACS workstation:
  // sideways changes the width, up and down the level.
  let drag = null;
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    const windowing = event.button === 2 || event.shiftKey;
    drag = { windowing, x: event.clientX, y: event.clientY, panX: view.panX, panY: view.panY,
             level: view.level, width: view.width };
    canvas.setPointerCapture(event.pointerId);
    canvas.classList.toggle("panning", !windowing);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.windowing) { setWindow(drag.level - dy, drag.width + dx); return; }
    view.panX = drag.panX + dx;
    view.panY = drag.panY + dy;
    clampPan();
    draw();
  });
  const endDrag = () => { drag = null; canvas.classList.remove("panning"); };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);

  // ---- controls and keys ----------------------------------------------------------------------------------
  // Every button drops focus after a click, so a later Enter or Space cannot press it again by accident.
  function onClick(id, action) {
    $(id).addEventListener("click", (event) => { event.currentTarget.blur(); action(); });
  }
  onClick("answer-real", () => guard(submit(false)));
  onClick("answer-synthetic", () => guard(submit(true)));
  onClick("zoom-in", () => zoomBy(1.25));
  onClick("zoom-out", () => zoomBy(0.8));
  onClick("zoom-fit", fit);
  onClick("window-reset", () => setWindow(DEFAULT_WINDOW.level, DEFAULT_WINDOW.width));
  for (const button of $("confidence").children) {
    const level = Number(button.dataset.confidence);
    button.addEventListener("click", (event) => {
      event.currentTarget.blur();
      choose(state.cls, state.confidence === level ? null : level);
    });
  }
  $("smooth").addEventListener("change", (event) => { event.currentTarget.blur(); setSmooth(event.currentTarget.checked); });
  $("level").addEventListener("input", (event) => setWindow(Number(event.currentTarget.value), view.width));
  $("width").addEventListener("input", (event) => setWindow(view.level, Number(event.currentTarget.value)));
  window.addEventListener("resize", () => { clampPan(); draw(); });

  // Class keys are the digits 1-9 as typed, or the physical digit keys (layouts such as AZERTY need shift).
  function digitOf(event, byCode) {
    if (/^[1-9]$/.test(event.key)) return Number(event.key);
    if (byCode && /^(Digit|Numpad)[1-9]$/.test(event.code)) return Number(event.code.slice(-1));
    return 0;
  }

  const COMMANDS = {
    r: () => guard(submit(false)), s: () => guard(submit(true)),
    "+": () => zoomBy(1.25), "=": () => zoomBy(1.25), "-": () => zoomBy(0.8), _: () => zoomBy(0.8),
    f: fit, i: () => setSmooth(!view.smooth), w: () => setWindow(DEFAULT_WINDOW.level, DEFAULT_WINDOW.width),
  };

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return; // Ctrl+R reloads; it must never answer "real"
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const answering = key === "r" || key === "s";
    if (answering && event.repeat) return; // a held key answers once, not for the next images too
    let digit = digitOf(event, false);
    if (!digit && !(key in COMMANDS)) digit = digitOf(event, true);
    if (digit) {
      event.preventDefault();
      if (!state.askClass) return;
      if (digit > state.classes.length) { hint(`There is no class ${digit}: ${classKeysText()}.`); return; }
      choose(state.cls === digit - 1 ? null : digit - 1, state.confidence);
      return;
    }
    const confidence = CONFIDENCE_KEYS.indexOf(key) + 1;
    if (confidence) {
      event.preventDefault();
      choose(state.cls, state.confidence === confidence ? null : confidence);
      return;
    }
    if (key in COMMANDS) {
      if (event.target instanceof HTMLInputElement && event.target.type === "range" && /^[+\-=_]$/.test(key)) return;
      event.preventDefault();
      COMMANDS[key]();
    }
  });

  guard(loadNext());
})();
