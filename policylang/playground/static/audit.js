/* policylang audit viewer (docs/audit-viewer.md#usage): opens the configured audit log or
   one chosen on this computer, shows the server's line-by-line chain verification, filters
   by task, principal and decision, and draws one record's decision and delegation path with
   PolicylangPath.draw (path.js), as the playground draws a decision.

   No dependencies. Every value from a log is put in the page as text (textContent), never
   as markup: a record is untrusted data. */
(function () {
  "use strict";

  var TOKEN_KEY = "policylang.playground.token";
  var API = "../api/audit/";
  var state = {
    config: null,
    source: null,      // "file" (the configured log) or "upload"
    upload: null,      // the chosen file's bytes (an ArrayBuffer)
    uploadName: "",
    rows: [],
    matched: 0,
    offset: 0,
    selected: null,
    token: null,
    loadSeq: 0,        // the latest table load: older answers are dropped
    detailSeq: 0,      // the latest record shown: older answers are dropped
  };
  try { state.token = window.sessionStorage.getItem(TOKEN_KEY) || null; } catch (e) { /* none */ }

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); }

  function api(method, path, body) {
    var headers = {};
    if (body !== undefined) headers["content-type"] = "application/octet-stream";
    if (state.token) headers["authorization"] = "Bearer " + state.token;
    return fetch(API + path, {
      method: method, headers: headers, credentials: "same-origin", body: body,
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.status === 401) $("auth-form").classList.add("pl-auth--shown");
        return { status: r.status, ok: r.ok, data: data };
      });
    }, function (err) {
      return { status: 0, ok: false, data: { error: { message: "the playground cannot be reached: " + err } } };
    });
  }

  function errorText(r) {
    var e = r.data && r.data.error;
    return (e && e.message) ? e.message : "HTTP " + r.status;
  }

  /* the query string of the filters and the anchored head */
  function query(extra) {
    var params = new URLSearchParams();
    ["task", "principal"].forEach(function (k) {
      var v = $("filter-" + k).value.trim();
      if (v) params.set(k, v);
    });
    var d = $("filter-decision").value;
    if (d) params.set("decision", d);
    var head = $("anchored-head").value.trim();
    if (head) params.set("head", head);
    Object.keys(extra || {}).forEach(function (k) { params.set(k, extra[k]); });
    var s = params.toString();
    return s ? "?" + s : "";
  }

  function logCall(path, extra) {
    if (state.source === "upload") return api("POST", path + query(extra), state.upload);
    return api("GET", path + query(extra));
  }

  // ------------------------------------------------------------------ the table

  function setBanner(kind, text) {
    var b = $("banner");
    b.className = "av-banner av-banner--" + kind;
    b.setAttribute("data-ok", kind === "ok" ? "true" : kind === "broken" ? "false" : "");
    b.textContent = text;
  }

  var STATUS_TEXT = { ok: "ok", tampered: "\u26a0 tampered", broken: "not verified", torn: "incomplete" };

  function cell(tr, text, cls) {
    var td = el("td", cls, text === null || text === undefined ? "" : text);
    if (text) td.title = String(text);
    tr.appendChild(td);
    return td;
  }

  /* "2026-12-02T03:51:21.147417Z" as "2026-12-02 03:51:21" (the whole value is the cell's title) */
  function shortTime(t) {
    var m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)/.exec(t || "");
    return m ? m[1] + " " + m[2] : t;
  }

  function rowElement(row) {
    var tr = el("tr", "av-row av-row--" + row.status);
    tr.setAttribute("data-testid", "audit-row");
    tr.setAttribute("data-line", String(row.line));
    tr.setAttribute("data-status", row.status);
    tr.tabIndex = 0;
    cell(tr, row.line);
    var time = cell(tr, shortTime(row.time));
    if (row.time) time.title = row.time;
    cell(tr, row.event !== null ? row.event : row.preview);
    cell(tr, row.principal);
    cell(tr, row.action);
    cell(tr, row.resource);
    var dec = cell(tr, row.decision, row.decision ? "av-dec--" + String(row.decision).replace(/[^a-z_]/g, "") : "");
    dec.setAttribute("data-testid", "row-decision");
    cell(tr, row.task);
    var st = el("td", "av-status");
    st.setAttribute("data-testid", "row-status");
    st.appendChild(el("span", "av-flag av-flag--" + row.status, STATUS_TEXT[row.status] || row.status));
    if (row.reason) {
      st.appendChild(el("span", "av-reason", row.reason));
      st.title = row.reason;
    }
    tr.appendChild(st);
    tr.addEventListener("click", function () { showRecord(row.line, tr); });
    tr.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showRecord(row.line, tr); }
    });
    return tr;
  }

  function renderRows(append) {
    var body = $("records").tBodies[0];
    if (!append) clear(body);
    var start = append ? body.rows.length : 0;
    for (var i = start; i < state.rows.length; i++) body.appendChild(rowElement(state.rows[i]));
    var shown = state.rows.length;
    $("count").textContent = "showing " + shown + " of " + state.matched + " matching line" +
      (state.matched === 1 ? "" : "s");
    $("more").hidden = shown >= state.matched;
  }

  function load(append) {
    var seq = ++state.loadSeq;
    if (!append) state.detailSeq++;
    var offset = append ? state.rows.length : 0;
    if (!append) setBanner("none", "verifying…");
    return logCall("log", { offset: String(offset) }).then(function (r) {
      if (seq !== state.loadSeq) return;
      if (!r.ok) {
        setBanner("error", errorText(r));
        if (!append) { state.rows = []; state.matched = 0; renderRows(false); }
        return;
      }
      var v = r.data.verification;
      setBanner(v.ok ? "ok" : "broken", v.summary);
      state.matched = r.data.matched;
      state.rows = append ? state.rows.concat(r.data.rows) : r.data.rows;
      renderRows(append);
      if (!append) hideDetail();
    });
  }

  // ------------------------------------------------------------------ one record

  function hideDetail() {
    $("detail").hidden = true;
    $("detail-empty").hidden = false;
    state.selected = null;
  }

  function list(dd, items, render) {
    clear(dd);
    if (!items || !items.length) { dd.textContent = "\u2014"; return; }
    items.forEach(function (item, i) {
      if (i) dd.appendChild(document.createTextNode(", "));
      dd.appendChild(el("span", null, render ? render(item) : item));
    });
  }

  function json(value) {
    try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
  }

  /* what the detail says of a line's status (a broken or torn line's reason says it all) */
  function statusText(d) {
    if (d.status === "ok") return "verified: this record is intact and chained to the one before";
    if (d.status === "tampered") return "\u26a0 tampered: " + d.reason;
    return d.reason || d.status;
  }

  function showRecord(line, tr) {
    var seq = ++state.detailSeq;
    Array.prototype.forEach.call(document.querySelectorAll(".av-row--selected"), function (n) {
      n.classList.remove("av-row--selected");
    });
    if (tr) tr.classList.add("av-row--selected");
    return logCall("records/" + encodeURIComponent(line)).then(function (r) {
      if (seq !== state.detailSeq) return;
      if (!r.ok) { setBanner("error", errorText(r)); return; }
      var d = r.data;
      state.selected = line;
      var status = $("detail-status");
      status.className = "av-detail-status av-detail-status--" + d.status;
      status.setAttribute("data-status", d.status);
      status.textContent = statusText(d);
      $("detail-claim").hidden = d.status === "ok";
      $("detail-drawn").className = "av-drawn" + (d.status === "ok" ? "" : " av-drawn--unverified");
      $("detail-line").textContent = String(d.line);
      var p = d.presented;
      var decision = $("detail-decision");
      if (p && p.decision) {
        decision.textContent = p.decision;
        decision.className = "pl-decision pl-decision--" + String(p.decision).replace(/[^a-z_]/g, "");
        decision.hidden = false;
      } else {
        decision.textContent = "";
        decision.hidden = true;
      }
      var pathBox = $("detail-path");
      if (p) window.PolicylangPath.draw(pathBox, p);
      else { clear(pathBox); pathBox.appendChild(el("span", "pl-muted", "this line is not a record: " + (d.raw || ""))); }
      var row = d.row || {};
      $("detail-event").textContent = row.event || "\u2014";
      $("detail-time").textContent = row.time || "\u2014";
      $("detail-task").textContent = row.task || "\u2014";
      list($("detail-determining"), p && p.determining);
      list($("detail-reasons"), p && p.reasons);
      list($("detail-grants"), p && p.grants, function (g) {
        var scopes = Array.isArray(g.scopes) ? g.scopes.join(" ") : json(g.scopes);
        return scopes + (g.ttl !== undefined ? " (" + g.ttl + " s)" : "");
      });
      list($("detail-approvers"), p && p.approvers);
      list($("detail-errors"), p && p.errors, function (e) { return e.rule + ": " + e.message; });
      $("detail-version").textContent = (p && p.policy_version) || "\u2014";
      $("detail-hash").textContent = row.hash || "\u2014";
      $("detail-request").textContent = d.request !== null && d.request !== undefined ? json(d.request) : "(none)";
      $("detail-record").textContent = d.record ? json(d.record) : (d.raw || "");
      $("detail-empty").hidden = true;
      $("detail").hidden = false;
    });
  }

  // ------------------------------------------------------------------ opening a log

  function openConfigured() {
    state.source = "file";
    state.upload = null;
    $("audit-source").textContent = "configured log: " + (state.config.name || "");
    return load(false);
  }

  function openUpload(file) {
    if (state.config && file.size > state.config.max_upload_bytes) {
      setBanner("error", file.name + ": larger than " + state.config.max_upload_bytes +
        " bytes, more than the viewer reads; check it with `policylang audit verify`");
      return Promise.resolve();
    }
    return file.arrayBuffer().then(function (buf) {
      state.source = "upload";
      state.upload = buf;
      state.uploadName = file.name;
      $("audit-source").textContent = "opened file: " + file.name;
      return load(false);
    });
  }

  function wire() {
    $("open-configured").addEventListener("click", openConfigured);
    $("audit-file").addEventListener("change", function () {
      var f = $("audit-file").files[0];
      if (f) openUpload(f);
    });
    $("filters").addEventListener("submit", function (e) {
      e.preventDefault();
      if (state.source) load(false);
    });
    $("filter-decision").addEventListener("change", function () { if (state.source) load(false); });
    $("clear-filters").addEventListener("click", function () {
      ["filter-task", "filter-principal", "filter-decision", "anchored-head"].forEach(function (id) { $(id).value = ""; });
      if (state.source) load(false);
    });
    $("more").addEventListener("click", function () { load(true); });
    $("auth-form").addEventListener("submit", function (e) {
      e.preventDefault();
      state.token = $("auth-token").value.trim() || null;
      try { window.sessionStorage.setItem(TOKEN_KEY, state.token || ""); } catch (x) { /* none */ }
      $("auth-form").classList.remove("pl-auth--shown");
      start();
    });
  }

  function start() {
    return api("GET", "config").then(function (r) {
      if (!r.ok) { setBanner("error", errorText(r)); return; }
      state.config = r.data;
      $("open-configured").hidden = !r.data.configured;
      if (r.data.configured && state.source !== "upload") return openConfigured();
      if (!state.source) setBanner("none", "No log open: choose an audit log file" +
        (r.data.configured ? " or open the configured one." : "."));
    });
  }

  wire();
  start();
  window.PolicylangAudit = { reload: function () { return load(false); }, show: showRecord };
})();
