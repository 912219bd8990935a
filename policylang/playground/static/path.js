/* policylang playground: draws the delegation path of a presented decision
   (docs/playground.md#decision-json) as a chain of hops, human -> orchestrator -> sub-agent,
   each marked allowed / denied / not evaluated. Shared by the playground and the audit viewer.

   window.PolicylangPath.draw(container, presented) replaces container's children.
   No dependencies; builds DOM nodes only (never innerHTML), so ids from a policy or an
   audit record cannot inject markup. */
(function () {
  "use strict";

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function mark(allowed) {
    if (allowed === true) return { cls: "allowed", text: "allowed", sym: "\u2713" };
    if (allowed === false) return { cls: "denied", text: "denied", sym: "\u2717" };
    return { cls: "unknown", text: "not evaluated", sym: "?" };
  }

  var ROLE_TEXT = { root: "root", delegator: "delegator", subject: "subject" };

  function draw(container, presented) {
    while (container.firstChild) container.removeChild(container.firstChild);
    var hops = (presented && Array.isArray(presented.path)) ? presented.path : [];
    var wrap = el("div", "pl-path");
    wrap.setAttribute("data-testid", "delegation-path");
    wrap.setAttribute("role", "list");
    wrap.setAttribute("aria-label", "delegation path");
    if (!hops.length) {
      wrap.appendChild(el("span", "pl-path-empty", "no delegation path"));
      container.appendChild(wrap);
      return wrap;
    }
    hops.forEach(function (hop, i) {
      if (i > 0) {
        var arrow = el("span", "pl-path-arrow", "\u2192");
        arrow.setAttribute("aria-hidden", "true");
        wrap.appendChild(arrow);
      }
      var m = mark(hop.allowed);
      var box = el("div", "pl-hop pl-hop--" + m.cls + " pl-hop--" + (ROLE_TEXT[hop.role] || "delegator"));
      box.setAttribute("role", "listitem");
      box.setAttribute("data-testid", "path-hop");
      box.setAttribute("data-role", String(hop.role || ""));
      box.setAttribute("data-allowed", hop.allowed === true ? "true" : hop.allowed === false ? "false" : "null");
      box.title = (hop.note || "");
      var head = el("div", "pl-hop-head");
      head.appendChild(el("span", "pl-hop-mark", m.sym));
      head.appendChild(el("span", "pl-hop-role", ROLE_TEXT[hop.role] || String(hop.role || "")));
      box.appendChild(head);
      box.appendChild(el("div", "pl-hop-label", hop.label || hop.id));
      var status = el("div", "pl-hop-status", m.text);
      status.setAttribute("data-testid", "path-hop-status");
      box.appendChild(status);
      if (hop.note) box.appendChild(el("div", "pl-hop-note", hop.note));
      wrap.appendChild(box);
    });
    if (presented && presented.decision) {
      var arrow2 = el("span", "pl-path-arrow", "\u21d2");
      arrow2.setAttribute("aria-hidden", "true");
      wrap.appendChild(arrow2);
      var verdict = el("div", "pl-verdict pl-verdict--" + String(presented.decision).replace(/[^a-z_]/g, ""),
                       presented.decision);
      verdict.setAttribute("data-testid", "path-verdict");
      wrap.appendChild(verdict);
    }
    container.appendChild(wrap);
    return wrap;
  }

  window.PolicylangPath = { draw: draw };
})();
