"use strict";
// The admin page: per-rater answered/total from /api/admin/TOKEN/progress, refreshed every 10 seconds.
(() => {
  const token = location.pathname.split("/")[2] || "";
  const $ = (id) => document.getElementById(id);

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text; // rater names are text, never HTML
    return td;
  }

  function render(raters) {
    const rows = raters.map((r) => {
      const tr = document.createElement("tr");
      const bar = document.createElement("div");
      bar.className = "meter";
      const fill = document.createElement("div");
      fill.style.width = `${r.total ? (100 * r.answered) / r.total : 0}%`;
      bar.append(fill);
      const last = document.createElement("td");
      last.append(bar);
      tr.append(cell(r.rater), cell(`${r.answered} / ${r.total}`), last);
      return tr;
    });
    $("raters").replaceChildren(...rows);
    $("answered").textContent = String(raters.reduce((n, r) => n + r.answered, 0));
    $("total").textContent = String(raters.reduce((n, r) => n + r.total, 0));
  }

  async function refresh() {
    try {
      const response = await fetch(`/api/admin/${token}/progress`, { cache: "no-store", referrerPolicy: "no-referrer" });
      if (response.status === 403) {
        $("admin").hidden = true;
        document.querySelector("header").hidden = true;
        $("invalid").hidden = false;
        document.body.dataset.state = "invalid";
        return;
      }
      render((await response.json()).raters);
      $("status").textContent = "";
      document.body.dataset.state = "ready";
    } catch (err) {
      $("status").textContent = "Connection lost; retrying\u2026";
    }
    setTimeout(refresh, 10000);
  }

  refresh();
})();
