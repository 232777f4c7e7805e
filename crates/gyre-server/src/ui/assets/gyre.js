// gyre web UI: live refresh of [data-live] parts, a running job's log (Server-Sent
// Events of rendered HTML), and earlier log output on demand. No external code.
"use strict";
(function () {
  // Live parts: poll this page for its live fragment; replace it when it changed.
  const live = document.querySelector("[data-live]");
  if (live) {
    let busy = false;
    setInterval(async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const r = await fetch(location.href, { headers: { "X-Gyre-Fragment": "live" }, credentials: "same-origin" });
        if (r.ok && !r.redirected) {
          const html = await r.text();
          if (html !== live.innerHTML) {
            const old = live.querySelector("[data-reload]");
            live.innerHTML = html;
            const now = live.querySelector("[data-reload]");
            if (old && now && old.dataset.reload !== now.dataset.reload) location.reload();
          }
        }
      } catch (e) { /* offline for a moment: try again next tick */ }
      busy = false;
    }, 2000);
  }

  const log = document.getElementById("log");
  if (!log) return;
  const task = log.dataset.task;
  // A log opens at its end: the tail is what was asked for.
  for (const pre of log.querySelectorAll("details[open] pre.log")) pre.scrollTop = pre.scrollHeight;

  function section(step, name) {
    let d = document.getElementById("step-" + step);
    if (d) return d;
    d = document.createElement("details");
    d.className = "step";
    d.id = "step-" + step;
    d.dataset.step = step;
    d.open = true;
    const s = document.createElement("summary");
    const n = document.createElement("span");
    n.className = "name";
    n.textContent = name || "step " + step;
    const b = document.createElement("span");
    b.className = "badge running";
    b.dataset.status = "running";
    b.textContent = "running";
    s.append(n, " ", b);
    const pre = document.createElement("pre");
    pre.className = "log";
    pre.id = "log-" + step;
    d.append(s, pre);
    // Keep steps in order.
    const after = Array.from(log.querySelectorAll("details.step")).find((x) => +x.dataset.step > step);
    log.insertBefore(d, after || null);
    const none = document.getElementById("no-steps");
    if (none) none.remove();
    return d;
  }

  if (log.dataset.complete !== "true") {
    const es = new EventSource("/ui/task/" + task + "/live?from=" + log.dataset.next);
    es.onmessage = (m) => {
      const e = JSON.parse(m.data);
      const d = section(e.step, e.name);
      if (e.kind === "output") {
        const pre = d.querySelector("pre.log");
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.insertAdjacentHTML("beforeend", e.html);
        if (stick) pre.scrollTop = pre.scrollHeight;
      } else if (e.kind === "finish") {
        const b = d.querySelector(".badge");
        b.className = "badge " + e.status;
        b.dataset.status = e.status;
        b.textContent = e.status.replace("_", " ");
      }
      log.dataset.next = e.seq + 1;
    };
    es.addEventListener("end", () => { es.close(); log.dataset.complete = "true"; });
  }

  const earlier = document.getElementById("earlier");
  if (earlier) {
    earlier.addEventListener("click", async () => {
      earlier.disabled = true;
      const r = await fetch("/ui/task/" + task + "/log?before=" + log.dataset.first, { credentials: "same-origin" });
      if (!r.ok) { earlier.disabled = false; return; }
      const part = await r.json();
      for (const s of part.steps) {
        const pre = section(s.step).querySelector("pre.log");
        pre.insertAdjacentHTML("afterbegin", s.html);
      }
      log.dataset.first = part.first;
      if (part.more) earlier.disabled = false; else earlier.remove();
    });
  }
})();
