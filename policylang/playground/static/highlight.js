/* policylang playground: a small tokenizer for policy files, with the token classes of
   policylang/editors/policylang.tmLanguage.json (comments, annotations, strings, durations,
   numbers, effect / clause / declaration keywords, word operators, constants, roots).

   window.PolicylangHighlight.render(pre, text, opts) fills `pre` with one <span class="pl-line">
   per source line (DOM nodes only, never innerHTML), marking diagnostics (opts.diagnostics:
   [{line, column, end_line, end_column, severity}]) with a wavy underline and a line class,
   and opts.highlight (a line number) with pl-line--hl. */
(function () {
  "use strict";

  var EFFECT = /^(permit|forbid|require|approval)$/;
  var CLAUSE = /^(for|to|on|when|unless|grant|by|because|limit|count|sum|per)$/;
  var DECL = /^(const|option)$/;
  var MODIFIER = /^(high_impact|authoritative)$/;
  var WORDOP = /^(and|or|not|in|matches|has|any|all)$/;
  var BOOL = /^(true|false)$/;
  var CONSTNAME = /^[A-Z][A-Z0-9_]*$/;
  var ROOT = /^(principal|action|resource|context|risk|delegation|intent)$/;

  /* tokens of one line: [{text, cls}] (cls "" for plain text) */
  function tokenizeLine(line, isJson) {
    var out = [];
    var i = 0, n = line.length;
    function push(text, cls) { if (text) out.push({ text: text, cls: cls || "" }); }
    while (i < n) {
      var c = line[i];
      var rest = line.slice(i);
      var m;
      if (!isJson && c === "#") { push(rest, "tok-comment"); break; }
      if (c === '"') {
        var j = i + 1;
        while (j < n && line[j] !== '"') { j += (line[j] === "\\") ? 2 : 1; }
        j = Math.min(j + 1, n);
        push(line.slice(i, j), "tok-string"); i = j; continue;
      }
      if (isJson) {
        if ((m = /^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(rest))) { push(m[0], "tok-number"); i += m[0].length; continue; }
        if ((m = /^(true|false|null)\b/.exec(rest))) { push(m[0], "tok-constant"); i += m[0].length; continue; }
        push(c, /[{}\[\]:,]/.test(c) ? "tok-operator" : ""); i += 1; continue;
      }
      if (c === "@" && (m = /^@[A-Za-z_][A-Za-z0-9_]*/.exec(rest))) { push(m[0], "tok-annotation"); i += m[0].length; continue; }
      if ((m = /^(?:[0-9]+[dhms])+(?![A-Za-z0-9_])/.exec(rest)) && (i === 0 || !/[A-Za-z0-9_]/.test(line[i - 1]))) {
        push(m[0], "tok-number"); i += m[0].length; continue;
      }
      if ((m = /^[0-9]+(?:\.[0-9]+)?/.exec(rest)) && (i === 0 || !/[A-Za-z0-9_]/.test(line[i - 1]))) {
        push(m[0], "tok-number"); i += m[0].length; continue;
      }
      if ((m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(rest))) {
        var w = m[0], cls = "";
        if (w === "permit") cls = "tok-effect-permit";
        else if (EFFECT.test(w)) cls = "tok-effect";
        else if (CLAUSE.test(w) || DECL.test(w) || MODIFIER.test(w)) cls = "tok-keyword";
        else if (WORDOP.test(w)) cls = "tok-operator";
        else if (BOOL.test(w)) cls = "tok-constant";
        else if (CONSTNAME.test(w)) cls = "tok-const-name";
        else if (ROOT.test(w) && /^\s*\./.test(line.slice(i + w.length))) cls = "tok-root";
        push(w, cls); i += w.length; continue;
      }
      if ((m = /^(==|!=|<=|>=|<|>|=|\+|-|\*|\/|\?)/.exec(rest))) { push(m[0], "tok-operator"); i += m[0].length; continue; }
      push(c, ""); i += 1;
    }
    return out;
  }

  /* split tokens at column boundaries [a, b) (1-based columns) and mark them */
  function markRange(tokens, a, b, cls) {
    var out = [], col = 1;
    tokens.forEach(function (t) {
      var start = col, end = col + t.text.length;
      col = end;
      if (end <= a || start >= b) { out.push(t); return; }
      var cut1 = Math.max(a, start) - start, cut2 = Math.min(b, end) - start;
      if (cut1 > 0) out.push({ text: t.text.slice(0, cut1), cls: t.cls, extra: t.extra });
      out.push({ text: t.text.slice(cut1, cut2), cls: t.cls, extra: (t.extra ? t.extra + " " : "") + cls });
      if (cut2 < t.text.length) out.push({ text: t.text.slice(cut2), cls: t.cls, extra: t.extra });
    });
    return out;
  }

  function render(pre, text, opts) {
    opts = opts || {};
    var isJson = !!opts.json;
    var diags = opts.diagnostics || [];
    while (pre.firstChild) pre.removeChild(pre.firstChild);
    var lines = String(text).split("\n");
    var byLine = {};
    diags.forEach(function (d) {
      var l0 = d.line || 1, l1 = Math.max(d.end_line || l0, l0);
      for (var l = l0; l <= l1 && l <= lines.length; l++) {
        (byLine[l] = byLine[l] || []).push(d);
      }
    });
    var frag = document.createDocumentFragment();
    lines.forEach(function (line, idx) {
      var n = idx + 1;
      var tokens = tokenizeLine(line, isJson);
      var lineDiags = byLine[n] || [];
      var cls = "pl-line";
      lineDiags.forEach(function (d) {
        var l0 = d.line || 1, l1 = Math.max(d.end_line || l0, l0);
        var a = (n === l0) ? (d.column || 1) : 1;
        var b = (n === l1 && d.end_column && (l1 > l0 || d.end_column > a)) ? d.end_column : line.length + 1;
        if (b <= a) b = a + 1;
        var warn = d.severity !== "error";
        if (line.length < a) tokens.push({ text: " ", cls: "" });
        tokens = markRange(tokens, a, Math.max(b, a + 1), warn ? "tok-squiggle-warn" : "tok-squiggle");
        cls += warn ? " pl-line--warn" : " pl-line--err";
      });
      if (opts.highlight === n) cls += " pl-line--hl";
      var span = document.createElement("span");
      span.className = cls;
      span.setAttribute("data-n", String(n));
      span.setAttribute("data-line", String(n));
      tokens.forEach(function (t) {
        var c = [t.cls, t.extra].filter(Boolean).join(" ");
        if (c) {
          var s = document.createElement("span");
          s.className = c;
          s.textContent = t.text;
          span.appendChild(s);
        } else {
          span.appendChild(document.createTextNode(t.text));
        }
      });
      frag.appendChild(span);
    });
    pre.appendChild(frag);
  }

  window.PolicylangHighlight = { render: render, tokenizeLine: tokenizeLine };
})();
