#!/usr/bin/env node
// Checks that the dashboard and the alert rules query only the metric families
// docs/observability.md names (and the few node_exporter ones listed below), and that the
// dashboard shows every family of that document. A renamed or misspelt family would otherwise
// show an empty panel or an alert that never fires, with nothing to say why.
//
// With --promql-out FILE it also writes the dashboard's panel queries, Grafana's variables
// replaced by sample values, as recording rules, for `promtool check rules` to parse.
//
// usage: node check-names.js [--promql-out FILE] docs/observability.md
//                            tools/monitoring/eskit-dashboard.json [tools/monitoring/eskit-alerts.yml]
"use strict";
const fs = require("fs");

// Families from elsewhere that the dashboard may read, and why.
const EXTERNAL = {
  node_filesystem_avail_bytes: "node_exporter: free space, for days until the log's disk is full",
};
const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "by", "without", "on",
  "ignoring", "group_left", "group_right", "inf", "nan"]);

function fail(msg) {
  process.stderr.write(`check-names: ${msg}\n`);
  process.exit(1);
}

function readText(path) {
  try {
    return fs.readFileSync(path, "utf8");
  } catch (e) {
    fail(`cannot read ${path}: ${e.message}`);
  }
}

// Every `eskit_...` name the document defines; a histogram also has its _bucket, _sum and _count.
function documentedFamilies(doc) {
  const families = new Map(); // series name -> family
  for (const m of doc.matchAll(/`(eskit_[a-z0-9_]+)`/g)) families.set(m[1], m[1]);
  for (const m of doc.matchAll(/^\|\s*`(eskit_[a-z0-9_]+)`\s*\|\s*histogram\s*\|/gm))
    for (const s of ["_bucket", "_sum", "_count"]) families.set(m[1] + s, m[1]);
  const table = [...doc.matchAll(/^\|\s*`(eskit_[a-z0-9_]+)`\s*\|/gm)].map((m) => m[1]);
  if (table.length === 0) fail("found no metric table (| `eskit_...` | type | ...) in the document");
  return { families, all: new Set(families.values()) };
}

// The metric names a PromQL expression (or a Grafana label_values() query) reads.
function metricNames(expr) {
  let e = expr
    .replace(/label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)[^)]*\)/g, " $1 ")
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, " ")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\$\{[^}]*\}|\$[a-zA-Z_]\w*/g, " ")
    .replace(/\b\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)?\b/gi, " ");
  const names = [];
  for (const m of e.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?/g)) {
    if (m[2] || KEYWORDS.has(m[1].toLowerCase())) continue; // a function call or an operator
    names.push(m[1]);
  }
  return names;
}

// The expressions of a Grafana dashboard: every "expr", and the queries of its variables.
function dashboardExprs(path) {
  let dash;
  try {
    dash = JSON.parse(readText(path));
  } catch (e) {
    fail(`${path} is not JSON: ${e.message}`);
  }
  const out = [];
  (function walk(v, where) {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${where}[${i}]`));
    if (!v || typeof v !== "object") return;
    const title = v.title ? `${where} "${v.title}"` : where;
    if (typeof v.expr === "string") out.push({ where: title, expr: v.expr });
    walk(v.panels, `${title}.panels`);
    walk(v.targets, `${title}.targets`);
  })(dash.panels, "panels");
  for (const t of (dash.templating && dash.templating.list) || [])
    if (t.type === "query") out.push({ where: `variable ${t.name}`, expr: t.definition || "" });
  if (out.length === 0) fail(`${path} has no panel with an expr`);
  return out;
}

// The expr: values of a rules file: one line, or a block (| or >) of deeper-indented lines.
function ruleExprs(path) {
  const lines = readText(path).split("\n");
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].match(/^(\s*)expr:\s*(.*)$/);
    if (!m) continue;
    let expr = m[2];
    if (/^[|>][-+]?$/.test(expr)) {
      expr = "";
      while (i + 1 < lines.length && (lines[i + 1].trim() === "" ||
             lines[i + 1].search(/\S/) > m[1].length))
        expr += lines[++i] + "\n";
    }
    out.push({ where: `${path}:${i + 1}`, expr });
  }
  if (out.length === 0) fail(`${path} has no expr`);
  return out;
}

const args = process.argv.slice(2);
let promqlOut = null;
if (args[0] === "--promql-out") {
  promqlOut = args[1];
  args.splice(0, 2);
}
const [docPath, dashPath, rulesPath] = args;
if (!docPath || !dashPath)
  fail("usage: node check-names.js OBSERVABILITY.md DASHBOARD.json [RULES.yml]");
const { families, all } = documentedFamilies(readText(docPath));
const exprs = dashboardExprs(dashPath);
const shown = new Set();
const problems = [];
for (const [file, list] of [[dashPath, exprs], [rulesPath, rulesPath ? ruleExprs(rulesPath) : []]]) {
  for (const { where, expr } of list) {
    for (const name of metricNames(expr)) {
      if (families.has(name)) {
        if (file === dashPath) shown.add(families.get(name));
      } else if (!EXTERNAL[name]) {
        problems.push(`${file}: ${where} reads '${name}', which ${docPath} does not name`);
      }
    }
  }
}
for (const f of all)
  if (!shown.has(f)) problems.push(`${dashPath}: no panel shows ${f} (named in ${docPath})`);
// Grafana's variables as a query would see them: a rate interval, a mount point, "all".
function withSampleValues(expr) {
  return expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}/g, "5m")
    .replace(/\$__interval|\$\{__interval\}/g, "1m")
    .replace(/\$mountpoint|\$\{mountpoint\}/g, "/")
    .replace(/\$\{?[a-zA-Z_]\w*\}?/g, ".*");
}
if (promqlOut) {
  const rules = exprs.filter((e) => !e.where.startsWith("variable "))
    .map((e, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(withSampleValues(e.expr))}\n`);
  fs.writeFileSync(promqlOut, `# ${dashPath}'s queries, generated by check-names.js\ngroups:\n` +
    `  - name: dashboard\n    rules:\n${rules.join("")}`);
}
if (problems.length) fail(`${problems.length} problems:\n  ${problems.join("\n  ")}`);
process.stdout.write(`check-names: ${exprs.length} dashboard queries read only documented ` +
  `families and show all ${all.size} of them\n`);
