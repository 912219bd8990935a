/* policylang playground page (docs/playground.md): the policy files in an editor with
   highlighting and the checker's diagnostics as you type, a request editor with the set's
   example requests, the decision with its delegation path and rule trace, and the example
   requests whose decision an edit changes. Talks only to this server's api/ (relative URLs,
   so it works at / and under serve --ui's /ui/). Builds DOM nodes, never innerHTML. */
(function () {
  "use strict";

  var DEBOUNCE_MS = 250;
  var state = {
    info: null, disk: {}, files: {}, order: [], current: null, diagnostics: [],
    examples: [], lastDecision: null, highlight: null, seq: 0, token: null,
  };
  try { state.token = window.sessionStorage.getItem("policylang.playground.token"); } catch (e) { /* none */ }

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
    if (body !== undefined) headers["content-type"] = "application/json";
    if (state.token) headers["authorization"] = "Bearer " + state.token;
    return fetch("api/" + path, {
      method: method, headers: headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.status === 401) $("auth-form").classList.add("pl-auth--shown");
        return { status: r.status, ok: r.ok, data: data };
      });
    });
  }

  /* the edited files that differ from disk: what the API calls take */
  function overrides() {
    var out = {};
    Object.keys(state.files).forEach(function (k) { if (state.files[k] !== state.disk[k]) out[k] = state.files[k]; });
    return out;
  }
  function edited() { return Object.keys(overrides()).length > 0; }

  // ------------------------------------------------------------------ the policy editor

  function renderTabs() {
    var tabs = $("file-tabs");
    clear(tabs);
    var withErrors = {};
    state.diagnostics.forEach(function (d) { if (d.severity === "error") withErrors[d.file] = true; });
    state.order.forEach(function (rel) {
      var b = el("button", "pl-tab" + (withErrors[rel] ? " pl-tab--error" : ""),
                 rel + (state.files[rel] !== state.disk[rel] ? " *" : ""));
      b.type = "button";
      b.setAttribute("role", "tab");
      b.setAttribute("data-testid", "file-tab");
      b.setAttribute("data-file", rel);
      b.setAttribute("aria-selected", rel === state.current ? "true" : "false");
      b.addEventListener("click", function () { openFile(rel); });
      tabs.appendChild(b);
    });
  }

  function renderHighlight() {
    var rel = state.current;
    if (rel === null) return;
    var diags = state.diagnostics.filter(function (d) { return d.file === rel; });
    window.PolicylangHighlight.render($("policy-highlight"), state.files[rel], {
      diagnostics: diags, json: /\.json$/.test(rel),
      highlight: state.highlight && state.highlight.file === rel ? state.highlight.line : null,
    });
    syncScroll($("policy-editor"), $("policy-highlight"));
  }

  function openFile(rel, line) {
    state.current = rel;
    var ta = $("policy-editor");
    ta.value = state.files[rel];
    ta.readOnly = false;
    renderTabs();
    renderHighlight();
    if (line) revealLine(line);
  }

  function revealLine(line, column) {
    var ta = $("policy-editor");
    var lines = ta.value.split("\n");
    var pos = 0;
    for (var i = 0; i < Math.min(line - 1, lines.length); i++) pos += lines[i].length + 1;
    pos += Math.max(0, (column || 1) - 1);
    var lh = 20;
    ta.scrollTop = Math.max(0, (line - 1) * lh - ta.clientHeight / 3);
    try { ta.setSelectionRange(pos, pos); } catch (e) { /* not focused */ }
    syncScroll(ta, $("policy-highlight"));
  }

  function syncScroll(ta, pre) { pre.scrollTop = ta.scrollTop; pre.scrollLeft = ta.scrollLeft; }

  function renderDiagnostics(ok, rules) {
    var ul = $("diagnostics");
    clear(ul);
    var errors = 0, warnings = 0;
    state.diagnostics.forEach(function (d) {
      if (d.severity === "error") errors++; else warnings++;
      var li = el("li", "pl-diag--" + d.severity);
      li.setAttribute("data-testid", "diagnostic");
      li.setAttribute("data-severity", d.severity);
      li.appendChild(el("span", "pl-where", d.file + ":" + d.line + ":" + d.column + ": "));
      li.appendChild(el("span", "pl-sev", d.severity + "[" + d.code + "]"));
      li.appendChild(document.createTextNode(" " + d.message));
      li.addEventListener("click", function () {
        state.highlight = { file: d.file, line: d.line };
        if (state.files[d.file] !== undefined) { openFile(d.file); revealLine(d.line, d.column); $("policy-editor").focus(); }
      });
      ul.appendChild(li);
    });
    var st = $("check-status");
    if (ok) {
      st.textContent = "checked: " + rules + " rule" + (rules === 1 ? "" : "s") +
        (warnings ? ", " + warnings + " warning" + (warnings === 1 ? "" : "s") : ", no problems") +
        (edited() ? " (edited, not saved)" : "");
      st.className = "pl-status pl-ok";
    } else {
      st.textContent = errors + " error" + (errors === 1 ? "" : "s") + (warnings ? ", " + warnings + " warning" + (warnings === 1 ? "" : "s") : "");
      st.className = "pl-status pl-error-text";
    }
    st.setAttribute("data-state", ok ? "ok" : "errors");
  }

  var checkTimer = null;
  function scheduleCheck() {
    if (checkTimer) clearTimeout(checkTimer);
    $("check-status").textContent = "checking…";
    $("check-status").setAttribute("data-state", "pending");
    checkTimer = setTimeout(runCheck, DEBOUNCE_MS);
  }

  function runCheck() {
    var seq = ++state.seq;
    var files = overrides();
    return api("POST", "check", { files: files }).then(function (r) {
      if (seq !== state.seq) return;
      if (!r.ok) { showStatusError(r); return; }
      state.diagnostics = r.data.diagnostics || [];
      renderDiagnostics(r.data.ok, r.data.rules);
      renderTabs();
      renderHighlight();
      if (r.data.ok) {
        runChanges(seq, files);
        if (state.lastDecision) decide(true);
      }
    });
  }

  function showStatusError(r) {
    var st = $("check-status");
    st.textContent = (r.data && r.data.error && r.data.error.message) || ("error " + r.status);
    st.className = "pl-status pl-error-text";
    st.setAttribute("data-state", "failed");
  }

  // ------------------------------------------------------------------ what changes

  function runChanges(seq, files) {
    var status = $("changes-status");
    var body = $("changes").querySelector("tbody");
    if (!Object.keys(files).length) {
      clear(body);
      status.textContent = "The files are as on disk: no example request changes.";
      status.setAttribute("data-state", "unchanged");
      return;
    }
    status.textContent = "comparing the example requests…";
    status.setAttribute("data-state", "pending");
    api("POST", "changes", { files: files }).then(function (r) {
      if (seq !== state.seq) return;
      clear(body);
      if (!r.ok) { status.textContent = (r.data.error && r.data.error.message) || "cannot compare"; status.setAttribute("data-state", "failed"); return; }
      var changed = r.data.changed || [];
      status.textContent = changed.length + " of " + r.data.compared + " example request" +
        (r.data.compared === 1 ? "" : "s") + " decide differently with the edit.";
      status.setAttribute("data-state", "done");
      changed.forEach(function (c) {
        var tr = el("tr", "pl-change-row");
        tr.setAttribute("data-testid", "change-row");
        tr.setAttribute("data-example", c.example);
        var name = el("td");
        name.appendChild(el("div", "", c.name));
        name.appendChild(el("div", "pl-muted pl-mono", c.example));
        tr.appendChild(name);
        [c.before, c.after].forEach(function (d, i) {
          var td = el("td");
          var badge = el("span", "pl-decision--" + String(d.decision).replace(/[^a-z_]/g, ""), d.decision);
          badge.setAttribute("data-testid", i === 0 ? "change-before" : "change-after");
          td.appendChild(badge);
          if (d.rules && d.rules.length) td.appendChild(el("div", "pl-muted pl-mono", d.rules.join(", ")));
          tr.appendChild(td);
        });
        tr.addEventListener("click", function () { pickExample(c.example); decide(false); });
        body.appendChild(tr);
      });
    });
  }

  // ------------------------------------------------------------------ the request and decision

  function renderRequestHighlight() {
    window.PolicylangHighlight.render($("request-highlight"), $("request-editor").value, { json: true });
    syncScroll($("request-editor"), $("request-highlight"));
  }

  function pickExample(id) {
    var sel = $("example-select");
    sel.value = id;
    var ex = state.examples.filter(function (e) { return e.id === id; })[0];
    if (ex) {
      $("request-editor").value = JSON.stringify(ex.request, null, 2);
      renderRequestHighlight();
    }
  }

  function list(id, items) {
    var n = $(id);
    clear(n);
    if (!items.length) { n.appendChild(el("span", "pl-muted", "none")); return; }
    items.forEach(function (t, i) {
      var s = el("div", "", t);
      s.setAttribute("data-testid", id + "-item");
      n.appendChild(s);
    });
  }

  function renderDecision(p) {
    $("decision-empty").hidden = true;
    $("decision-box").hidden = false;
    var badge = $("decision");
    badge.textContent = p.decision;
    badge.className = "pl-decision pl-decision--" + String(p.decision).replace(/[^a-z_]/g, "");
    badge.setAttribute("data-decision", p.decision);
    window.PolicylangPath.draw($("path"), p);
    list("determining", p.determining);
    list("reasons", p.reasons);
    list("grants", p.grants.map(function (g) { return g.rule + ": " + g.scopes.join(" ") + " for " + g.ttl + "s"; }));
    list("approvers", p.approvers);
    list("errors", p.errors.map(function (e) { return e.rule + ": " + e.message; }));
    var body = $("trace").querySelector("tbody");
    clear(body);
    p.trace.forEach(function (t) {
      var tr = el("tr", "pl-trace-row");
      tr.setAttribute("data-testid", "trace-row");
      tr.setAttribute("data-rule", t.rule);
      tr.setAttribute("data-held", t.held ? "true" : "false");
      tr.appendChild(el("td", "pl-mono", t.rule));
      tr.appendChild(el("td", "", t.effect.replace("_", " ")));
      var held = t.error ? "error" : t.held ? "held" : "did not hold";
      tr.appendChild(el("td", "pl-held pl-held--" + (t.error ? "error" : t.held ? "yes" : "no"), held));
      tr.appendChild(el("td", "", t.why));
      tr.appendChild(el("td", "pl-mono pl-muted", t.file + ":" + t.line));
      tr.addEventListener("click", function () {
        Array.prototype.forEach.call(body.children, function (r) { r.classList.remove("pl-trace-row--selected"); });
        tr.classList.add("pl-trace-row--selected");
        state.highlight = { file: t.file, line: t.line };
        if (state.files[t.file] !== undefined) { openFile(t.file); revealLine(t.line, t.column); }
      });
      body.appendChild(tr);
    });
  }

  function decide(quiet) {
    var errBox = $("request-error");
    var text = $("request-editor").value;
    var request;
    try { request = JSON.parse(text); } catch (e) {
      errBox.textContent = "request: not valid JSON: " + e.message;
      errBox.setAttribute("data-state", "error");
      return Promise.resolve();
    }
    var body = { request: request, files: overrides() };
    var ex = $("example-select").value;
    var chosen = state.examples.filter(function (e) { return e.id === ex; })[0];
    if (chosen) body.example = ex;  // its entities and approvals apply, to an edited copy too
    if (!quiet) { errBox.textContent = "deciding…"; errBox.setAttribute("data-state", "pending"); }
    return api("POST", "decide", body).then(function (r) {
      if (!r.ok) {
        var e = r.data.error || {};
        errBox.textContent = (e.field ? e.field + ": " : "") + (e.message || ("error " + r.status));
        errBox.setAttribute("data-state", "error");
        return;
      }
      errBox.textContent = "";
      errBox.setAttribute("data-state", "ok");
      state.lastDecision = r.data.decision;
      renderDecision(r.data.decision);
    });
  }

  // ------------------------------------------------------------------ start

  function wire() {
    var ta = $("policy-editor");
    ta.addEventListener("input", function () {
      if (state.current === null) return;
      state.files[state.current] = ta.value;
      state.highlight = null;
      renderHighlight();
      scheduleCheck();
    });
    ta.addEventListener("scroll", function () { syncScroll(ta, $("policy-highlight")); });
    ta.addEventListener("keydown", function (e) {
      if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.metaKey) {
        e.preventDefault();
        var s = ta.selectionStart, t = ta.selectionEnd;
        ta.setRangeText("  ", s, t, "end");
        ta.dispatchEvent(new Event("input"));
      }
    });
    var rq = $("request-editor");
    rq.addEventListener("input", renderRequestHighlight);
    rq.addEventListener("scroll", function () { syncScroll(rq, $("request-highlight")); });
    rq.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); decide(false); }
    });
    $("example-select").addEventListener("change", function (e) { if (e.target.value) pickExample(e.target.value); });
    $("decide-button").addEventListener("click", function () { decide(false); });
    $("revert-button").addEventListener("click", function () {
      if (state.current === null) return;
      state.files[state.current] = state.disk[state.current];
      openFile(state.current);
      scheduleCheck();
    });
    $("save-button").addEventListener("click", function () {
      var rel = state.current;
      api("POST", "save", { path: rel, text: state.files[rel] }).then(function (r) {
        if (!r.ok) { showStatusError(r); return; }
        state.disk[rel] = state.files[rel];
        renderTabs();
        runCheck();
      });
    });
    $("auth-form").addEventListener("submit", function (e) {
      e.preventDefault();
      state.token = $("auth-token").value.trim() || null;
      try { window.sessionStorage.setItem("policylang.playground.token", state.token || ""); } catch (x) { /* none */ }
      $("auth-form").classList.remove("pl-auth--shown");
      start();
    });
  }

  function start() {
    return Promise.all([api("GET", "info"), api("GET", "files"), api("GET", "examples")]).then(function (rs) {
      var info = rs[0], files = rs[1], examples = rs[2];
      if (!info.ok || !files.ok) { showStatusError(info.ok ? files : info); return; }
      state.info = info.data;
      $("set-path").textContent = info.data.path;
      $("mode").textContent = info.data.read_only ? "read-only" : "saving allowed";
      $("mode").setAttribute("data-read-only", info.data.read_only ? "true" : "false");
      $("save-button").hidden = !!info.data.read_only;
      state.order = []; state.disk = {}; state.files = {};
      files.data.files.forEach(function (f) { state.order.push(f.path); state.disk[f.path] = f.text; state.files[f.path] = f.text; });
      var firstPolicy = state.order.filter(function (p) { return /\.policy$/.test(p); })[0] || state.order[0] || null;
      if (firstPolicy !== null) openFile(firstPolicy);
      var sel = $("example-select");
      while (sel.options.length > 1) sel.remove(1);
      state.examples = examples.ok ? examples.data.examples : [];
      state.examples.forEach(function (e) {
        var o = el("option", "", e.name + "  (" + e.id + ")");
        o.value = e.id;
        sel.appendChild(o);
      });
      if (state.examples.length) pickExample(state.examples[0].id);
      else { $("request-editor").value = JSON.stringify({ principal: { kind: "agent", id: "" }, action: "", resource: { type: "", id: "" } }, null, 2); renderRequestHighlight(); }
      runCheck();
    });
  }

  wire();
  start();
})();
