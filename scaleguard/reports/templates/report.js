/* scaleguard report: draws the big tables from the JSON island. Data only ever reaches the page through
   textContent / createTextNode, never innerHTML, because every string here came from a node or a user. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var PAGE = 200;
  var STATUS_RANK = rankOf(D.statuses), SEV_RANK = rankOf(D.severities);
  var STATUS_LABEL = function (s) { return s.replace("_", " "); };
  var PROBLEMS = ["error", "fail", "not_assessed"];
  var COLLATOR = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function rankOf(list) { var m = Object.create(null); list.forEach(function (v, i) { m[v] = i; }); return m; }

  function el(tag, cls, children) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function badge(kind, value) { return el("span", kind + " " + kind + "-" + value, [kind === "st" ? STATUS_LABEL(value) : value]); }
  function days(d, cls) { return d === null || d === undefined ? el("span", "muted", ["unknown"]) : el("span", "exp-" + cls, [String(d)]); }
  function kv(obj) {
    var dl = el("dl", "kv");
    Object.keys(obj || {}).forEach(function (k) {
      var v = obj[k];
      dl.appendChild(el("dt", "", [k]));
      dl.appendChild(el("dd", "", [typeof v === "string" ? v : JSON.stringify(v, null, 1)]));
    });
    return dl;
  }
  function cmp(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined || a === "") return 1;
    if (b === null || b === undefined || b === "") return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return COLLATOR.compare(String(a), String(b));
  }
  function formValues(form) {
    var v = {};
    Array.prototype.forEach.call(form.elements, function (f) { if (f.name) v[f.name] = f.value.trim().toLowerCase(); });
    return v;
  }

  /* One sortable, filterable, paged table. Rows are plain objects; columns say how to sort and draw. */
  function makeTable(cfg) {
    var table = document.getElementById(cfg.id), head = el("tr"), body = el("tbody");
    var order = cfg.rows.map(function (_, i) { return i; }), visible = [], shown = 0, sortCol = -1, sortDir = 1;
    cfg.columns.forEach(function (c, i) {
      var th = el("th", c.cls || "", [c.label]);
      th.setAttribute("scope", "col");
      th.title = "Sort by " + c.label;
      th.addEventListener("click", function () { sortBy(i); });
      head.appendChild(th);
    });
    table.appendChild(el("thead", "", [head]));
    table.appendChild(body);
    var count = document.getElementById(cfg.id.replace("-table", "-count"));
    var moreBox = document.getElementById(cfg.id.replace("-table", "-more"));

    function sortBy(i) {
      sortDir = sortCol === i ? -sortDir : 1;
      sortCol = i;
      var get = cfg.columns[i].sort;
      var keys = cfg.rows.map(get);
      order = cfg.rows.map(function (_, k) { return k; })
        .sort(function (a, b) { return cmp(keys[a], keys[b]) * sortDir || a - b; });
      Array.prototype.forEach.call(head.children, function (th, k) {
        if (k === i) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
        else th.removeAttribute("aria-sort");
      });
      refresh();
    }
    function refresh() {
      var match = cfg.matcher();
      visible = order.filter(function (k) { return match(cfg.rows[k]); });
      shown = 0;
      body.textContent = "";
      more(PAGE);
    }
    function more(n) {
      var frag = document.createDocumentFragment(), end = Math.min(visible.length, shown + n);
      for (var j = shown; j < end; j++) frag.appendChild(drawRow(cfg.rows[visible[j]]));
      body.appendChild(frag);
      shown = end;
      count.textContent = "Showing " + shown + " of " + visible.length + " " + cfg.noun +
        (visible.length !== cfg.rows.length ? " (filtered from " + cfg.rows.length + ")" : "");
      moreBox.textContent = "";
      if (shown < visible.length) {
        var next = el("button", "", ["Show " + Math.min(PAGE * 5, visible.length - shown) + " more"]);
        next.type = "button";
        next.addEventListener("click", function () { more(PAGE * 5); });
        var all = el("button", "", ["Show all " + visible.length]);
        all.type = "button";
        all.addEventListener("click", function () { more(visible.length); });
        moreBox.appendChild(next);
        moreBox.appendChild(document.createTextNode(" "));
        moreBox.appendChild(all);
      }
    }
    function drawRow(r) {
      var tr = el("tr", "row");
      cfg.columns.forEach(function (c) { tr.appendChild(el("td", c.cls || "", [c.cell(r)])); });
      tr.addEventListener("click", function (ev) {
        if (ev.target.closest("button, a")) return;
        var next = tr.nextElementSibling;
        if (next && next.classList.contains("detail")) { next.remove(); tr.classList.remove("open"); return; }
        var td = el("td", "", [cfg.detail(r)]);
        td.colSpan = cfg.columns.length;
        tr.classList.add("open");
        tr.after(el("tr", "detail", [td]));
      });
      return tr;
    }
    if (cfg.sortBy !== undefined) sortBy(cfg.sortBy); else refresh();
    return { refresh: refresh };
  }

  function bindFilters(formId, table) {
    var form = document.getElementById(formId), timer = null;
    form.addEventListener("change", function () { table.refresh(); });
    form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(table.refresh, 120); });
    form.addEventListener("reset", function () { setTimeout(table.refresh, 0); });
    form.addEventListener("submit", function (ev) { ev.preventDefault(); });
    return form;
  }

  var nodeNames = Object.create(null);
  D.nodes.forEach(function (n) { nodeNames[n.name.toLowerCase()] = true; });
  function nodeMatches(query, name) {
    if (!query) return true;
    name = name.toLowerCase();
    return nodeNames[query] ? name === query : name.indexOf(query) >= 0;
  }
  var withCluster = D.multiCluster;
  function nodeLabel(n) { return withCluster ? n.cluster + "/" + n.name : n.name; }

  /* Findings */
  var findings = D.findings.map(function (a) {
    return { p: D.policies[a[0]], n: D.nodes[a[1]], st: a[2], sev: a[3], msg: a[4], ev: a[5], subj: a[6], waiver: a[7],
             rem: a[8] || D.policies[a[0]].remediation, applicable: a[9] === 1 };
  });
  function haystack(f) {
    if (f.hay === undefined) {
      f.hay = [f.p.id, f.p.title, f.n.name, f.n.cluster, f.msg, f.subj, JSON.stringify(f.ev), f.rem]
        .join("\n").toLowerCase();
    }
    return f.hay;
  }
  var findingsForm = document.getElementById("findings-filters");
  var findingsTable = makeTable({
    id: "findings-table", rows: findings, noun: "findings",
    columns: [
      { label: "status", sort: function (f) { return STATUS_RANK[f.st]; },
        cell: function (f) { return f.applicable ? badge("st", f.st) : el("span", "", [badge("st", f.st), " n/a"]); } },
      { label: "severity", sort: function (f) { return SEV_RANK[f.sev]; }, cell: function (f) { return badge("sev", f.sev); } },
      { label: "policy", sort: function (f) { return f.p.id; }, cell: function (f) { return el("code", "", [f.p.id]); } },
      { label: "node", sort: function (f) { return nodeLabel(f.n); }, cell: function (f) { return nodeLabel(f.n); } },
      { label: "desired state", sort: function (f) { return f.p.title; }, cell: function (f) { return f.p.title; } },
      { label: "message", cls: "msg", sort: function (f) { return f.msg; }, cell: function (f) { return f.msg; } }
    ],
    matcher: function () {
      var v = formValues(findingsForm);
      return function (f) {
        if (v.status === "problems" ? PROBLEMS.indexOf(f.st) < 0 || !f.applicable : v.status && f.st !== v.status) return false;
        if (v.severity && f.sev !== v.severity) return false;
        if (v.policy && f.p.id.toLowerCase() !== v.policy) return false;
        if (!nodeMatches(v.node, f.n.name)) return false;
        return !v.text || haystack(f).indexOf(v.text) >= 0;
      };
    },
    detail: function (f) {
      var box = el("div", "", [el("h3", "", [f.p.id + " on " + nodeLabel(f.n) + ": " + f.p.title]), el("p", "", [f.msg])]);
      if (f.subj) box.appendChild(el("p", "", [el("strong", "", ["Subject: "]), el("code", "", [f.subj])]));
      box.appendChild(el("h3", "", ["Evidence"]));
      box.appendChild(Object.keys(f.ev || {}).length ? kv(f.ev) : el("p", "muted", ["none recorded"]));
      if (f.waiver) { box.appendChild(el("h3", "", ["Waiver"])); box.appendChild(kv(f.waiver)); }
      if (f.rem) {
        box.appendChild(el("h3", "", ["Fix: " + f.rem]));
        box.appendChild(el("p", "", [D.fixSteps[f.rem] || f.p.fix]));
      }
      if (f.p.description) box.appendChild(el("p", "muted", [f.p.description]));
      if (f.p.references.length) {
        var ul = el("ul", "refs");
        f.p.references.forEach(function (r) {
          var li = el("li");
          if (/^https?:\/\//i.test(r)) { var a = el("a", "", [r]); a.href = r; a.rel = "noopener noreferrer"; li.appendChild(a); }
          else li.appendChild(document.createTextNode(r));
          ul.appendChild(li);
        });
        box.appendChild(ul);
      }
      return box;
    }
  });
  bindFilters("findings-filters", findingsTable);

  /* Nodes */
  var nodesForm = document.getElementById("nodes-filters");
  var countCols = D.statuses.map(function (s, i) {
    return { label: STATUS_LABEL(s), cls: "num", sort: function (n) { return -n.counts[i]; },
             cell: function (n) { return n.counts[i] ? el("span", "", [String(n.counts[i])]) : el("span", "muted", ["0"]); } };
  });
  var nodesTable = makeTable({
    id: "nodes-table", rows: D.nodes, noun: "nodes",
    columns: [
      { label: "node", sort: nodeLabel, cell: function (n) { return el("strong", "", [nodeLabel(n)]); } },
      { label: "roles", sort: function (n) { return n.roles; }, cell: function (n) { return n.roles || "–"; } },
      { label: "collection", sort: function (n) { return n.state; },
        cell: function (n) { return n.state === "ok" ? "ok" : el("span", "bad", [n.state + (n.reason ? ": " + n.reason : "")]); } },
      { label: "FQDN", sort: function (n) { return n.fqdn; }, cell: function (n) { return n.fqdn; } }
    ].concat(countCols, [
      { label: "worst", sort: function (n) { return n.worst ? SEV_RANK[n.worst] : null; },
        cell: function (n) { return n.worst ? badge("sev", n.worst) : ""; } },
      { label: "certs", cls: "num", sort: function (n) { return n.certs; },
        cell: function (n) { return n.certs === null ? el("span", "muted", ["unknown"]) : String(n.certs); } },
      { label: "own cert days left", cls: "num", sort: function (n) { return n.soonest; },
        cell: function (n) { return days(n.soonest, n.soonestClass); } }
    ]),
    matcher: function () {
      var v = formValues(nodesForm);
      return function (n) {
        if (v.role && n.roles.indexOf(v.role) < 0) return false;
        if (v.only === "problems" && !(n.counts[0] + n.counts[1] + n.counts[2])) return false;
        return !v.text || [n.name, n.cluster, n.fqdn, n.state, n.reason, n.roles].join("\n").toLowerCase().indexOf(v.text) >= 0;
      };
    },
    detail: function (n) {
      var box = el("div");
      var show = el("button", "", ["Show this node's findings"]);
      show.type = "button";
      show.addEventListener("click", function () { setFilter(findingsForm, { node: n.name, status: "", severity: "", policy: "", text: "" }); openTab("findings"); });
      var certs = el("button", "", ["Show this node's certificates"]);
      certs.type = "button";
      certs.addEventListener("click", function () { setFilter(certsForm, { node: n.name, store: "", expiry: "", text: "" }); openTab("certificates"); });
      box.appendChild(el("p", "", [show, " ", certs]));
      box.appendChild(el("h3", "", ["Diagnostics while reading this node's evidence"]));
      if (!n.diagnostics.length) box.appendChild(el("p", "muted", ["none"]));
      else {
        var ul = el("ul");
        n.diagnostics.forEach(function (d) { ul.appendChild(el("li", "", [el("strong", "", [d[0]]), " ", el("code", "", [d[1]]), ": ", d[2]])); });
        box.appendChild(ul);
      }
      return box;
    }
  });
  bindFilters("nodes-filters", nodesTable);

  /* Certificates: one row per (node, store, certificate); the certificate itself is stored once. */
  var holders = D.certs.map(function () { return 0; });
  var certRows = D.holdings.map(function (h) { holders[h[2]] += 1; return { n: D.nodes[h[0]], store: h[1], ci: h[2], c: D.certs[h[2]], key: h[3] }; });
  var certsForm = document.getElementById("certs-filters");
  var EXPIRY_SETS = { expired: ["expired"], soon: ["expired", "soon"], warn: ["expired", "soon", "warn"] };
  var certsTable = makeTable({
    id: "certs-table", rows: certRows, noun: "certificate entries", sortBy: 5,
    columns: [
      { label: "node", sort: function (r) { return nodeLabel(r.n); }, cell: function (r) { return nodeLabel(r.n); } },
      { label: "store", sort: function (r) { return r.store; }, cell: function (r) { return r.store; } },
      { label: "subject", sort: function (r) { return r.c[0]; }, cell: function (r) { return r.c[0]; } },
      { label: "thumbprint", cls: "wrap", sort: function (r) { return r.c[2]; }, cell: function (r) { return el("code", "", [r.c[2]]); } },
      { label: "not after", sort: function (r) { return r.c[3]; }, cell: function (r) { return r.c[3].replace("T", " "); } },
      { label: "days left", cls: "num", sort: function (r) { return r.c[4]; }, cell: function (r) { return days(r.c[4], r.c[5]); } },
      { label: "key", sort: function (r) { return r.c[6]; }, cell: function (r) { return r.c[6]; } },
      { label: "signature hash", sort: function (r) { return r.c[7]; }, cell: function (r) { return r.c[7] || "unknown"; } },
      { label: "private key", sort: function (r) { return String(r.key); },
        cell: function (r) { return r.key === null ? el("span", "muted", ["unknown"]) : r.key ? "yes" : "no"; } }
    ],
    matcher: function () {
      var v = formValues(certsForm), ok = v.expiry ? EXPIRY_SETS[v.expiry] : null;
      return function (r) {
        if (v.store && r.store.toLowerCase() !== v.store) return false;
        if (ok && ok.indexOf(r.c[5]) < 0) return false;
        if (!nodeMatches(v.node, r.n.name)) return false;
        return !v.text || [r.c[0], r.c[1], r.c[2], r.c[6], r.c[7]].join("\n").toLowerCase().indexOf(v.text) >= 0;
      };
    },
    detail: function (r) {
      return kv({ issuer: r.c[1], "self-signed": r.c[8] ? "yes" : "no", thumbprint: r.c[2], "not after": r.c[3],
                  "held in": holders[r.ci] + " node store(s) of this report" });
    }
  });
  bindFilters("certs-filters", certsTable);

  /* Navigation between the views, and shortcuts from the summary into the findings table. */
  var list = document.getElementById("node-names");
  D.nodes.forEach(function (n) { var o = document.createElement("option"); o.value = n.name; list.appendChild(o); });
  var tabs = document.getElementById("tabs");
  tabs.hidden = false;
  function openTab(name) {
    Array.prototype.forEach.call(document.querySelectorAll("section.tab"), function (s) { s.hidden = s.id !== name; });
    Array.prototype.forEach.call(tabs.querySelectorAll("button"), function (b) { b.classList.toggle("active", b.dataset.tab === name); });
  }
  function setFilter(form, values) {
    Object.keys(values).forEach(function (k) { if (form.elements[k]) form.elements[k].value = values[k]; });
    form.dispatchEvent(new Event("change"));
  }
  tabs.addEventListener("click", function (ev) { var b = ev.target.closest("button[data-tab]"); if (b) openTab(b.dataset.tab); });
  function jump(values) {
    setFilter(findingsForm, Object.assign({ status: "", severity: "", policy: "", node: "", text: "" }, values));
    openTab("findings");
    tabs.scrollIntoView({ behavior: "smooth" });
  }
  document.addEventListener("click", function (ev) {
    var t = ev.target.closest("[data-filter-status], [data-filter-policy], td[data-severity]");
    if (!t) return;
    if (t.dataset.filterPolicy) jump({ policy: t.dataset.filterPolicy });
    else if (t.dataset.severity) jump({ severity: t.dataset.severity, status: t.dataset.status });
    else jump({ status: t.dataset.filterStatus });
  });
  openTab("findings");
})();
