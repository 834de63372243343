"use strict";
// ragmed evidence viewer: no framework, no external assets. Text from the server is inserted with textContent only.
(function () {
  const $ = (id) => document.getElementById(id);
  const keyInput = $("key");
  keyInput.value = sessionStorage.getItem("ragmed-key") || "";
  let file = null;

  function setFile(f) {
    file = f || null;
    $("drop-label").textContent = file ? "Image: " + file.name : "Drop a DICOM, PNG or JPEG image here, or choose one";
    const prev = $("preview");
    if (file && /^image\/(png|jpeg)$/.test(file.type)) { prev.src = URL.createObjectURL(file); prev.hidden = false; }
    else { prev.hidden = true; }
  }
  $("image").addEventListener("change", (ev) => setFile(ev.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over");
    if (ev.dataTransfer.files.length) setFile(ev.dataTransfer.files[0]); });

  function headers() {
    const k = keyInput.value.trim();
    sessionStorage.setItem("ragmed-key", k);
    return k ? { "Authorization": "Bearer " + k } : {};
  }

  function status(text, isError) { const s = $("status"); s.textContent = text; s.className = isError ? "error" : ""; }

  function renderAnswer(text, evidenceByRef) {
    // split on citation marks [1], [K2] and make them links to the evidence cards
    const box = $("answer"); box.textContent = "";
    const parts = text.split(/(\[K?\d+\])/);
    for (const part of parts) {
      if (/^\[K?\d+\]$/.test(part)) {
        const a = document.createElement("span"); a.className = "cite"; a.textContent = part;
        a.addEventListener("click", () => { const c = evidenceByRef[part]; if (c) { c.scrollIntoView(); c.classList.add("hl");
          setTimeout(() => c.classList.remove("hl"), 1500); } });
        box.appendChild(a);
      } else { box.appendChild(document.createTextNode(part)); }
    }
  }

  async function thumbnail(url, holder) {
    try {
      const r = await fetch(url, { headers: headers() });
      if (!r.ok) throw new Error(String(r.status));
      const img = document.createElement("img");
      img.alt = "evidence image"; img.src = URL.createObjectURL(await r.blob());
      await img.decode().catch(() => {});
      holder.replaceWith(img);
    } catch (e) { holder.textContent = "no thumbnail"; }
  }

  async function render(a) {
    $("result").hidden = false;
    const byRef = {};
    const cards = $("evidence"); cards.textContent = "";
    const waits = [];
    for (const e of a.evidence) {
      const card = document.createElement("div"); card.className = "card"; card.dataset.caseId = e.case_id;
      const ph = document.createElement("div"); ph.className = "noimg"; ph.textContent = e.thumbnail ? "loading…" : "no image";
      card.appendChild(ph);
      if (e.thumbnail) waits.push(thumbnail(e.thumbnail, ph));
      const h = document.createElement("h3"); h.textContent = e.ref + " " + e.case_id; card.appendChild(h);
      const sc = document.createElement("div"); sc.className = "score";
      const chans = Object.entries(e.channels || {}).map(([k, v]) => k + " " + Number(v).toFixed(3)).join(" · ");
      sc.textContent = "score " + Number(e.score).toFixed(4) + (e.similarity != null ? " · similarity " + Number(e.similarity).toFixed(3) : "") + (chans ? " · " + chans : "");
      card.appendChild(sc);
      const p = document.createElement("p"); p.textContent = e.excerpt || e.text || ""; card.appendChild(p);
      cards.appendChild(card); byRef[e.ref] = card;
    }
    const kl = $("knowledge"); kl.textContent = "";
    for (const k of a.knowledge || []) {
      const li = document.createElement("li");
      li.textContent = k.ref + " " + k.name + " (" + k.concept_id + ")" + (k.text ? ": " + k.text.slice(0, 200) : "");
      kl.appendChild(li);
    }
    if (!(a.knowledge || []).length) { const li = document.createElement("li"); li.textContent = "no linked concepts"; kl.appendChild(li); }
    renderAnswer(a.answer, byRef);
    const ab = $("abstain");
    ab.hidden = !a.insufficient_evidence;
    ab.textContent = a.insufficient_evidence ? "ragmed abstains: the evidence is insufficient for an answer." : "";
    $("models").textContent = "models: " + Object.entries(a.models || {}).map(([k, v]) => k + "=" + v).join(", ") + " · " + (a.intended_use || "");
    await Promise.all(waits);
    document.body.dataset.state = "done";
  }

  $("ask-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    document.body.dataset.state = "asking";
    status("asking…");
    const fd = new FormData();
    fd.append("question", $("question").value);
    if (file) fd.append("image", file, "upload");
    try {
      const r = await fetch("/v1/ask", { method: "POST", body: fd, headers: headers() });
      const body = await r.json();
      if (!r.ok) { status((body.error && body.error.message) || ("HTTP " + r.status), true); document.body.dataset.state = "error"; return; }
      status("answered in " + Number((body.timings || {}).total || 0).toFixed(2) + " s");
      await render(body);
    } catch (e) { status("request failed: " + e, true); document.body.dataset.state = "error"; }
  });
})();
