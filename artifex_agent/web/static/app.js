// artifex web page: live updates over Server-Sent Events (no build step, no libraries).
// Everything from the server is put in the page with textContent, never as HTML.
"use strict";

(function () {
  const page = document.body.dataset.page;
  const csrf = document.body.dataset.csrf;
  const live = document.getElementById("live");

  function text(el, value) { if (el) el.textContent = value == null ? "" : String(value); }

  // A live preview: the event names a URL on this site (its ?v= changes with each picture), never the bytes.
  function showPreview(img, url) {
    if (!img) return;
    if (url) { if (img.getAttribute("src") !== url) img.src = url; img.hidden = false; }
    else { img.removeAttribute("src"); img.hidden = true; }
  }

  function left(eta) { return eta ? eta + " left" : ""; }

  function connect(url, handlers) {
    // EventSource reconnects by itself (the server sends `retry:`); each connection starts with a snapshot.
    const source = new EventSource(url);
    source.addEventListener("open", function () { if (live) live.className = "live on"; });
    source.addEventListener("error", function () { if (live) live.className = "live off"; });
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (e) { handlers[name](JSON.parse(e.data)); });
    });
    window.addEventListener("pagehide", function () { source.close(); });
    return source;
  }

  function actionForm(jobId, what, label, extra) {
    const form = document.createElement("form");
    form.method = "post"; form.action = "/jobs/" + encodeURIComponent(jobId) + "/" + what; form.className = "inline";
    const fields = Object.assign({csrf: csrf, next: location.pathname + location.search}, extra || {});
    Object.keys(fields).forEach(function (k) {
      const input = document.createElement("input");
      input.type = "hidden"; input.name = k; input.value = fields[k]; form.appendChild(input);
    });
    const button = document.createElement("button");
    button.type = "submit"; button.className = "act-" + what; button.dataset.action = what; text(button, label);
    form.appendChild(button);
    return form;
  }

  // ------------------------------------------------------------------ queue
  function queueRow(job) {
    const tr = document.createElement("tr");
    tr.id = "job-" + job.id; tr.dataset.job = job.id;
    ["id", "prompt", "preview", "state", "stage", "agent", "bar", "elapsed", "eta", "priority", "actions"].forEach(function (k) {
      const td = document.createElement("td");
      if (k === "id") {
        const a = document.createElement("a"); a.href = "/jobs/" + encodeURIComponent(job.id); text(a, job.id);
        td.appendChild(a);
      } else if (k === "bar") {
        const bar = document.createElement("progress"); bar.className = "bar"; bar.max = 100; td.appendChild(bar);
      } else if (k === "preview") {
        const img = document.createElement("img"); img.className = "preview"; img.alt = "live preview"; img.hidden = true;
        td.className = k; td.appendChild(img);
      } else {
        td.className = k;
      }
      tr.appendChild(td);
    });
    return tr;
  }

  function fillRow(tr, job) {
    tr.className = "state-" + job.state;
    text(tr.querySelector(".prompt"), job.prompt);
    tr.querySelector(".prompt").title = job.prompt;
    text(tr.querySelector(".state"), job.state);
    text(tr.querySelector(".stage"), job.waiting ? job.stage + " — " + job.waiting : job.stage);
    text(tr.querySelector(".agent"), job.agent);
    tr.querySelector("progress").value = job.percent;
    text(tr.querySelector(".elapsed"), job.elapsed);
    text(tr.querySelector(".eta"), left(job.eta));
    showPreview(tr.querySelector("img.preview"), job.preview);
    text(tr.querySelector(".priority"), job.priority);
    const actions = tr.querySelector(".actions");
    actions.replaceChildren();
    if (job.state === "queued" || job.state === "running") actions.appendChild(actionForm(job.id, "cancel", "Cancel"));
    if (job.state === "failed" || job.state === "cancelled") actions.appendChild(actionForm(job.id, "retry", "Retry"));
    if (job.state === "queued") {
      actions.appendChild(actionForm(job.id, "priority", "Raise priority", {priority: job.priority + 1}));
    }
  }

  function startQueue() {
    const table = document.getElementById("jobs");
    const body = table.querySelector("tbody");
    const filter = table.dataset.state;
    function upsert(job, atTop) {
      if (filter && job.state !== filter) {
        const gone = document.getElementById("job-" + job.id);
        if (gone) gone.remove();
        return;
      }
      let tr = document.getElementById("job-" + job.id);
      if (!tr) {
        const empty = body.querySelector("tr.empty"); if (empty) empty.remove();
        tr = queueRow(job);
        if (atTop) body.prepend(tr); else body.appendChild(tr);
      }
      fillRow(tr, job);
    }
    connect("/events" + (filter ? "?state=" + encodeURIComponent(filter) : ""), {
      snapshot: function (jobs) { jobs.slice().reverse().forEach(function (j) { upsert(j, true); }); },
      job: function (ev) {
        if (ev.job) { upsert(ev.job, true); }
        const tr = document.getElementById("job-" + ev.job_id);
        if (!tr) return;
        if (ev.kind === "progress") {
          tr.querySelector("progress").value = ev.percent || 0;
          text(tr.querySelector(".stage"), ev.stage);
          if (ev.agent) text(tr.querySelector(".agent"), ev.agent);
          text(tr.querySelector(".eta"), left(ev.eta));
          if (ev.preview) showPreview(tr.querySelector("img.preview"), ev.preview);
        }
      },
    });
  }

  // ------------------------------------------------------------------ one job
  function startJob() {
    const card = document.getElementById("job");
    const jobId = card.dataset.job;
    const events = document.getElementById("events");
    let state = card.dataset.state;
    connect("/events?job=" + encodeURIComponent(jobId), {
      snapshot: function (jobs) { if (jobs.length) update(jobs[0]); },
      job: function (ev) {
        const li = document.createElement("li");
        text(li, new Date(ev.time * 1000).toLocaleTimeString() + " " + ev.state + " " + ev.stage + " " +
             (ev.kind === "progress" ? ev.step + "/" + ev.total : ev.message));
        if (ev.kind !== "progress") events.appendChild(li);
        if (ev.kind === "progress") {
          document.getElementById("job-bar").value = ev.percent || 0;
          text(document.getElementById("job-stage"), ev.stage);
          text(document.getElementById("job-eta"), left(ev.eta));
          if (ev.preview) showPreview(document.getElementById("job-preview"), ev.preview);
        }
        if (ev.job) update(ev.job);
      },
    });
    function update(job) {
      text(document.getElementById("job-state"), job.state);
      document.getElementById("job-state").className = "badge state-" + job.state;
      document.getElementById("job-bar").value = job.percent;
      text(document.getElementById("job-stage"), job.stage);
      if (job.eta) text(document.getElementById("job-eta"), left(job.eta));
      showPreview(document.getElementById("job-preview"), job.preview);
      // A job that just ended has outputs (or an error) to show: the page reloads once to show them.
      if (job.state !== state && job.terminal) { location.reload(); }
      state = job.state;
    }
  }

  // ------------------------------------------------------------------ agents
  function startAgentsLive() {
    const list = document.getElementById("agents");
    const source = new EventSource("/events?agents=1");
    source.addEventListener("open", function () { if (live) live.className = "live on"; });
    source.addEventListener("error", function () { if (live) live.className = "live off"; });
    source.addEventListener("agents", function (e) {
      JSON.parse(e.data).forEach(function (a) {
        const card = list.querySelector('[data-agent="' + CSS.escape(a.name) + '"]');
        if (!card) return;
        const state = card.querySelector('[data-k="state"]');
        text(state, a.state); state.className = "badge agent-" + a.state;
        text(card.querySelector('[data-k="busy"]'), a.busy);
        text(card.querySelector('[data-k="mtu"]'), a.mtu || "?");
        const links = card.querySelector('[data-k="links"]');
        links.replaceChildren();
        a.links.forEach(function (l) {
          const li = document.createElement("li");
          li.className = "link-" + (l.ok === true ? "ok" : (l.ok === false ? "down" : "unknown"));
          text(li, l.text); links.appendChild(li);
        });
        const gpus = card.querySelector('[data-k="gpus"]');
        gpus.replaceChildren();
        a.gpus.forEach(function (g) {
          const p = document.createElement("p");
          text(p, g.name + ": " + g.used_gib + " / " + g.total_gib + " GiB, " + g.temperature_c + " °C, " +
               g.utilization_pct + " % ");
          const bar = document.createElement("progress"); bar.max = 100; bar.value = g.percent; p.appendChild(bar);
          gpus.appendChild(p);
        });
        if (!a.gpus.length) { const p = document.createElement("p"); p.className = "hint"; text(p, a.gpu_problem || "no GPU reported"); gpus.appendChild(p); }
        const jobs = card.querySelector('[data-k="jobs"]');
        jobs.replaceChildren();
        a.jobs.forEach(function (j) {
          const link = document.createElement("a"); link.href = "/jobs/" + encodeURIComponent(j); text(link, j);
          jobs.appendChild(link); jobs.appendChild(document.createTextNode(" "));
        });
        if (!a.jobs.length) text(jobs, "none");
      });
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  // ------------------------------------------------------------------ submit: sizes for the chosen model
  function startSubmit() {
    const model = document.getElementById("model");
    const size = document.getElementById("size");
    function sync() {
      const option = model.selectedOptions[0];
      const allowed = option && option.dataset.sizes ? option.dataset.sizes.split(" ") : null;
      Array.from(size.options).forEach(function (o) {
        o.hidden = allowed !== null && o.value !== "custom" && allowed.indexOf(o.value) < 0;
      });
      if (size.selectedOptions[0] && size.selectedOptions[0].hidden) size.value = "custom";
      document.querySelectorAll("label.custom").forEach(function (l) { l.hidden = size.value !== "custom"; });
    }
    model.addEventListener("change", sync); size.addEventListener("change", sync); sync();
  }

  document.querySelectorAll("time[data-unix]").forEach(function (t) {
    text(t, new Date(parseFloat(t.dataset.unix) * 1000).toLocaleTimeString());
  });
  if (page === "queue") startQueue();
  else if (page === "job") startJob();
  else if (page === "agents") startAgentsLive();
  else if (page === "submit") startSubmit();
})();
