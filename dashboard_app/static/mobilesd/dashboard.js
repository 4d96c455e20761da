/* MobileSD admin: keeps the dashboard, and the progress bars of the job list and job page, up
   to date without reloading. The dashboard follows the event stream and asks
   /admin/dashboard/status again on its events; without the stream (and on the other pages) it
   asks every few seconds while the page is visible. It builds the DOM from that JSON (text
   only: nothing from it is parsed as HTML). */
(function () {
  "use strict";

  var STATUSES = ["pending", "processing", "completed", "failed", "cancelled"];
  var DEFAULT_POLL_MS = 2000;
  var MAX_BACKOFF_MS = 15000;

  function el(tag, attrs) {
    var node = document.createElement(tag);
    var name;
    for (name in attrs || {}) {
      if (!Object.prototype.hasOwnProperty.call(attrs, name)) continue;
      var value = attrs[name];
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "";
    var s = Math.max(0, Math.round(value));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    return m < 60 ? m + " min " + (s % 60) + " s" : Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function progressBar(job) {
    return el(
      "span",
      { className: "msd-progress", "data-msd-percent": job.percent },
      el("progress", { value: job.percent, max: 100, "aria-label": "Progress" }),
      el("span", { className: "msd-pct", text: job.percent + "%" })
    );
  }

  // --- the dashboard --------------------------------------------------------------------------

  function renderCounts(box, data) {
    var nodes = STATUSES.map(function (status) {
      return el(
        "a",
        { className: "msd-count msd-c-" + status, href: data.count_urls[status], "data-msd-count": status },
        el("strong", { text: String(data.counts[status] || 0) }),
        status
      );
    });
    if (data.unassigned_pending) {
      nodes.push(el("span", { className: "msd-empty", text: data.unassigned_pending + " waiting for any server" }));
    }
    box.replaceChildren.apply(box, nodes);
  }

  function runningJob(job) {
    var detail = [];
    if (job.queued) detail.push("waiting in the server's queue");
    if (job.step !== null && job.step !== undefined && job.total_steps) {
      detail.push("step " + job.step + "/" + job.total_steps);
    }
    if (job.eta_seconds) detail.push("about " + seconds(job.eta_seconds) + " left");
    if (job.retry_count) detail.push("attempt " + (job.retry_count + 1));
    return el(
      "div",
      { className: "msd-running", "data-msd-job": job.id },
      el("a", { href: job.url, title: job.prompt, text: job.prompt || job.id }),
      progressBar(job),
      detail.length ? el("small", { text: detail.join(" · ") }) : null
    );
  }

  function serverCard(server) {
    var queue = server.queue_depth + " waiting";
    if (server.state === "disabled" && server.queue_depth) queue += " (kept while disabled)";
    var rows = [
      ["Checkpoint", server.loaded_checkpoint || "—", "checkpoint"],
      ["Queue", queue, "queue"],
      ["Last seen", server.last_seen, "seen"],
    ];
    return el(
      "article",
      { className: "msd-server msd-state-" + server.state, "data-server-id": server.id, "data-state": server.state },
      el(
        "header",
        null,
        el("a", { className: "msd-server-name", href: server.url, text: server.alias }),
        el("span", { className: "msd-badge msd-" + server.state, "data-msd-server-state": "", text: server.state })
      ),
      el.apply(
        null,
        ["dl", { className: "msd-dl" }].concat(
          rows.map(function (row) {
            return el("div", { "data-msd-field": row[2] }, el("dt", { text: row[0] }), el("dd", { text: row[1] }));
          })
        )
      ),
      server.running.length
        ? el.apply(null, ["div", null].concat(server.running.map(runningJob)))
        : el("p", { className: "msd-idle", text: "No job running." }),
      server.last_error ? el("p", { className: "msd-error", text: server.last_error }) : null
    );
  }

  function renderServers(box, data) {
    if (!data.servers.length) {
      box.replaceChildren(el("p", { className: "msd-empty", text: "No servers yet: add one under Servers." }));
      return;
    }
    box.replaceChildren.apply(box, data.servers.map(serverCard));
  }

  function renderImages(box, data) {
    var key = data.latest_images.map(function (i) { return i.job_id + "/" + i.index; }).join(",");
    if (box.getAttribute("data-msd-key") === key) return; // unchanged: keep the loaded images
    box.setAttribute("data-msd-key", key);
    if (!data.latest_images.length) {
      box.replaceChildren(el("p", { className: "msd-empty", text: "No finished images yet." }));
      return;
    }
    box.replaceChildren.apply(
      box,
      data.latest_images.map(function (image) {
        return el(
          "a",
          { href: image.url, title: image.prompt + " (" + image.server + ")" },
          el("img", { src: image.thumbnail_url, alt: image.prompt, loading: "lazy", width: 256, height: 256 })
        );
      })
    );
  }

  function renderDashboard(root, data) {
    renderCounts(root.querySelector("[data-msd-counts]"), data);
    renderServers(root.querySelector("[data-msd-servers]"), data);
    renderImages(root.querySelector("[data-msd-images]"), data);
  }

  // --- progress bars on the job list and the job page -----------------------------------------

  function updateJobProgress(data) {
    var running = {};
    data.running.forEach(function (job) { running[job.id] = job; });
    var changed = false;
    document.querySelectorAll("[data-msd-job-progress]").forEach(function (node) {
      var job = running[node.getAttribute("data-msd-job-progress")];
      if (job) {
        node.querySelector("progress").value = job.percent;
        node.querySelector(".msd-pct").textContent = job.percent + "%";
      }
    });
    document.querySelectorAll("[data-msd-job-status]").forEach(function (badge) {
      var id = badge.getAttribute("data-msd-job-status");
      var shown = badge.textContent.trim();
      if (shown === "processing" && !running[id]) changed = true;
      if (shown === "pending" && running[id]) changed = true;
    });
    if (changed && !document.querySelector(".msd-stale-notice")) {
      var content = document.getElementById("content");
      if (content) {
        content.prepend(
          el(
            "p",
            { className: "msd-stale-notice", role: "status" },
            "Jobs on this page have moved on. ",
            el("a", { href: window.location.href, text: "Reload" })
          )
        );
      }
    }
  }

  // --- following the event stream; polling without it ----------------------------------------

  // The dashboard follows the event stream (GET /api/v1/events, with the staff session's
  // cookie): each event of a job, batch, server or the queue asks for the state once (a burst
  // of events within `debounce_ms` is one request), and the page polls only every
  // `refresh_ms` for the ages that move without events. Until the stream is open, while it
  // reconnects, and for good if it fails (not open within `open_timeout_ms`, or refused), the
  // page polls every few seconds as before. The other pages (job list, job page) poll.
  function start() {
    var root = document.getElementById("msd-dashboard");
    var meta = document.querySelector('meta[name="msd-status-url"]');
    var url = root ? root.getAttribute("data-status-url") : meta && meta.content;
    var hasLiveJobs = Array.prototype.some.call(document.querySelectorAll("[data-msd-job-status]"), function (badge) {
      var shown = badge.textContent.trim();
      return shown === "pending" || shown === "processing";
    });
    if (!url || (!root && !hasLiveJobs)) return;

    var interval = (root && Number(root.getAttribute("data-poll-ms"))) || DEFAULT_POLL_MS;
    var delay = interval;
    var timer = null;
    var stopped = false;
    var live = root && root.querySelector("[data-msd-live]");
    var mode = "poll"; // "stream" while the event stream is open
    var stream = null; // the stream's settings (the state's `stream`)
    var source = null;
    var debounce = null;
    var inFlight = false;
    var again = false;

    function setLive(text, ok) {
      if (!live) return;
      live.querySelector("[data-msd-live-text]").textContent = text;
      live.classList.toggle("msd-stale", !ok);
    }

    function setMode(value) {
      mode = value;
      if (root) root.setAttribute("data-msd-mode", value);
    }

    function count(name) {
      root.setAttribute(name, String(Number(root.getAttribute(name)) + 1));
    }

    function apply(data, polled) {
      if (root) {
        renderDashboard(root, data);
        if (polled) {
          // How many answers arrived since the page loaded (the browser tests wait on it).
          count("data-msd-updates");
          setLive("Live · updated " + new Date().toLocaleTimeString(), true);
        }
      }
      updateJobProgress(data);
    }

    function schedule() {
      if (stopped || document.hidden) return; // visibilitychange starts it again
      clearTimeout(timer);
      timer = setTimeout(poll, mode === "stream" ? stream.refresh_ms || 60000 : delay);
    }

    function poll() {
      if (stopped) return;
      if (inFlight) {
        again = true; // asked again while a request is out: once more when it answers
        return;
      }
      inFlight = true;
      clearTimeout(timer);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 401 || response.status === 403) {
            stopped = true;
            if (source) source.close();
            setLive("Logged out: reload the page to log in again", false);
            return null;
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          if (data) {
            apply(data, true);
            if (data.poll_ms > 0) interval = data.poll_ms; // the server sets the pace
            delay = interval;
          }
        })
        .catch(function () {
          delay = Math.min(delay * 2, MAX_BACKOFF_MS);
          setLive("Cannot reach MobileSD, retrying…", false);
        })
        .then(function () {
          inFlight = false;
          if (again && !stopped) {
            again = false;
            poll();
          } else {
            schedule();
          }
        });
    }

    function refreshSoon() {
      if (debounce !== null || document.hidden) return; // visibilitychange reads the state
      debounce = setTimeout(function () {
        debounce = null;
        poll();
      }, stream.debounce_ms || 250);
    }

    function giveUp() {
      if (source) source.close();
      source = null;
      setMode("poll");
      schedule();
    }

    function follow(settings) {
      if (!root || !window.EventSource || !settings || !settings.url) return;
      stream = settings;
      var opened = false;
      source = new EventSource(settings.url);
      var openTimer = setTimeout(function () {
        if (!opened) giveUp();
      }, settings.open_timeout_ms || 5000);
      source.onopen = function () {
        opened = true;
        clearTimeout(openTimer);
        setMode("stream");
        schedule();
        refreshSoon(); // whatever changed before it opened (or while it reconnected)
      };
      settings.events.forEach(function (name) {
        source.addEventListener(name, function () {
          count("data-msd-events");
          refreshSoon();
        });
      });
      source.onerror = function () {
        if (!source) return;
        // A dropped connection: EventSource reconnects by itself (from the last event id);
        // the page polls meanwhile. A refused stream (an HTTP error, not an event stream):
        // it is closed for good, and the page polls from now on.
        if (source.readyState === EventSource.CLOSED) giveUp();
        else if (mode === "stream") {
          setMode("poll");
          schedule();
        }
      };
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && !stopped) {
        clearTimeout(timer);
        poll();
      }
    });

    if (root) {
      setMode("poll");
      var initial = document.getElementById("msd-dashboard-data");
      var data = initial ? JSON.parse(initial.textContent) : null;
      if (data) apply(data, false);
      follow(data && data.stream);
    }
    schedule();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
