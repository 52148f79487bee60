"""The web page at ``/``: one self-contained HTML file (inline CSS and JavaScript, no build step,
nothing fetched from elsewhere), so it works offline. It only calls the JSON API: a text query
(``GET /api/search``), an image query (``POST /api/search``, dropped or chosen), the +/− terms and
weight, thumbnails from ``/api/thumbnail``, and, when the server has a caption index, the
uploaded image's captions (``POST /api/captions``). Results are put on the page with
``textContent`` and attributes, never as HTML.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>align_tf search</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em;
         color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  #info, #status { color: #555; font-size: .9em; }
  form { display: grid; grid-template-columns: 1fr auto; gap: .5em; margin: .8em 0; }
  input[type=text], input[type=number] { padding: .45em; font: inherit; border: 1px solid #aaa;
         border-radius: 4px; }
  button { padding: .45em 1em; font: inherit; cursor: pointer; }
  .terms { display: flex; gap: .5em; grid-column: 1 / 3; flex-wrap: wrap; }
  .terms label { display: flex; gap: .3em; align-items: center; }
  .terms input[type=text] { width: 15em; }
  .terms input[type=number] { width: 5em; }
  #drop { border: 2px dashed #999; border-radius: 6px; padding: .8em; text-align: center;
          color: #555; grid-column: 1 / 3; }
  #drop.over { border-color: #06c; background: #eef5ff; }
  #preview { max-height: 90px; vertical-align: middle; margin-right: .6em; display: none; }
  #error { color: #b00; min-height: 1.2em; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
             gap: .8em; margin-top: .6em; }
  figure { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: .4em;
           background: #fafafa; overflow-wrap: anywhere; }
  figure img { width: 100%; height: 140px; object-fit: contain; background: #eee; }
  figcaption { font-size: .8em; }
  .score { font-weight: bold; }
  #captions { margin: .4em 0; padding-left: 1.2em; }
</style>
</head>
<body>
<h1>align_tf search</h1>
<div id="info">loading…</div>
<form id="form" autocomplete="off">
  <input type="text" id="text" name="text" placeholder="Describe what to find, then Enter">
  <button type="submit" id="go">Search</button>
  <div class="terms">
    <label>+ <input type="text" id="plus" placeholder="add terms, comma-separated"></label>
    <label>− <input type="text" id="minus" placeholder="subtract terms, comma-separated"></label>
    <label>weight <input type="number" id="weight" value="1" step="0.1"></label>
    <label>k <input type="number" id="k" value="20" min="1" max="1000"></label>
  </div>
  <div id="drop">
    <img id="preview" alt="query image">
    Drop an image here to search with it, or <input type="file" id="file" accept="image/*">
    <button type="button" id="clear" hidden>clear image</button>
  </div>
</form>
<div id="error"></div>
<div id="status"></div>
<ol id="captions" hidden></ol>
<div id="results"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let health = null, image = null;

function terms(id) {
  return $(id).value.split(",").map((t) => t.trim()).filter((t) => t.length > 0);
}

function showError(message) {
  $("error").textContent = message || "";
}

async function call(url, options) {
  const response = await fetch(url, options);
  let body;
  try { body = await response.json(); } catch (e) { body = {error: response.statusText}; }
  if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
  return body;
}

function imageForm() {
  const form = new FormData();
  form.append("image", image, image.name || "upload");
  for (const t of terms("plus")) form.append("plus", t);
  for (const t of terms("minus")) form.append("minus", t);
  form.append("weight", $("weight").value || "1");
  form.append("k", $("k").value || "20");
  return form;
}

async function search() {
  showError("");
  const text = $("text").value.trim();
  let request, what;
  if (text) {
    const params = new URLSearchParams({text: text, k: $("k").value || "20",
                                        weight: $("weight").value || "1"});
    for (const t of terms("plus")) params.append("plus", t);
    for (const t of terms("minus")) params.append("minus", t);
    request = ["/api/search?" + params.toString(), {}];
    what = "text query";
  } else if (image) {
    request = ["/api/search", {method: "POST", body: imageForm()}];
    what = "image query";
  } else {
    showError("Type a query or drop an image.");
    return;
  }
  $("status").textContent = "searching…";
  const start = performance.now();
  try {
    const body = await call(...request);
    render(body, what, performance.now() - start);
  } catch (e) {
    $("status").textContent = "";
    showError(e.message);
  }
  if (!text && image && health && health.captions) captions();
}

function render(body, what, roundTrip) {
  const grid = $("results");
  grid.replaceChildren();
  grid.dataset.renders = String(Number(grid.dataset.renders || 0) + 1);  // for tests to wait on
  const images = !health || health.index.modality !== "text";
  for (const r of body.results) {
    const fig = document.createElement("figure");
    fig.className = "result";
    fig.dataset.id = r.id;
    if (images) {
      const img = document.createElement("img");
      img.src = "/api/thumbnail?id=" + encodeURIComponent(r.id);
      img.alt = r.id;
      img.title = r.source || r.id;
      fig.appendChild(img);
    }
    const cap = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = r.score.toFixed(3);
    cap.append(score, " " + r.id);
    if (r.caption) {
      const c = document.createElement("div");
      c.textContent = r.caption;
      cap.appendChild(c);
    }
    fig.appendChild(cap);
    grid.appendChild(fig);
  }
  $("status").textContent = body.results.length + " results · " + what + " · query " +
    body.query_time_ms.toFixed(1) + " ms on the server (" + roundTrip.toFixed(0) +
    " ms round trip)";
}

async function captions() {
  const list = $("captions");
  try {
    const form = new FormData();
    form.append("image", image, image.name || "upload");
    form.append("k", "5");
    const body = await call("/api/captions", {method: "POST", body: form});
    list.replaceChildren(...body.results.map((r) => {
      const li = document.createElement("li");
      li.textContent = r.caption + " (" + r.score.toFixed(3) + ")";
      return li;
    }));
    list.hidden = false;
  } catch (e) {
    showError(e.message);
  }
}

function setImage(file) {
  if (!file) return;
  image = file;
  $("text").value = "";
  $("preview").src = URL.createObjectURL(file);
  $("preview").style.display = "inline";
  $("clear").hidden = false;
  $("captions").hidden = true;
  search();
}

$("form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("file").addEventListener("change", () => setImage($("file").files[0]));
$("clear").addEventListener("click", () => {
  image = null;
  $("file").value = "";
  $("preview").style.display = "none";
  $("clear").hidden = true;
  $("captions").hidden = true;
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  setImage(e.dataTransfer.files[0]);
});
call("/api/health").then((h) => {
  health = h;
  const kind = h.index.modality === "text" ? "captions" : "images";
  $("info").textContent = h.index.count + " " + kind + " (" + h.index.kind + " index)" +
    (h.captions ? " · " + h.captions.count + " captions for image → text" : "");
}).catch((e) => showError(e.message));
</script>
</body>
</html>
"""
