#!/usr/bin/env node
// A Confluent Schema Registry test double (docs/registry.md, "Testing without a registry"): the
// documented REST endpoints eskit and @kafkajs/confluent-schema-registry call, served from
// memory, with no npm dependency. Run: node registry_double.js --port-file F [--log F]
// [--mode ok|409|422|500|garbage|slow|incompatible] [--slow-ms N]. It listens on 127.0.0.1 on
// a free port, writes the port to --port-file once listening, and appends one JSON line per
// request to --log: {"method", "path", "subject", "auth", "body"}. As a real registry does, a schema
// text registered twice gets one id, whatever the subject.
'use strict';
const http = require('http');
const fs = require('fs');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const mode = args.mode || 'ok';
const slowMs = Number(args['slow-ms'] || 2000);

const subjects = new Map(); // subject -> [{id, version, schema, schemaType}]
const schemas = new Map(); // id -> {schema, schemaType}
const configs = new Map(); // subject -> compatibility level
let nextId = 1;

const CT = 'application/vnd.schemaregistry.v1+json';
function reply(res, status, body) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': CT, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
const notFound = (res, code, message) => reply(res, 404, { error_code: code, message });

function idOf(schema, schemaType) {
  for (const [id, s] of schemas) if (s.schema === schema && s.schemaType === schemaType) return id;
  const id = nextId++;
  schemas.set(id, { schema, schemaType });
  return id;
}

function register(res, subject, body) {
  if (typeof body.schema !== 'string' || !body.schema.length)
    return reply(res, 422, { error_code: 42201, message: 'Invalid schema: no schema text' });
  const type = body.schemaType || 'AVRO';
  const versions = subjects.get(subject) || [];
  const known = versions.find((v) => v.schema === body.schema && v.schemaType === type);
  if (known) return reply(res, 200, { id: known.id });
  const id = idOf(body.schema, type);
  versions.push({ id, version: versions.length + 1, schema: body.schema, schemaType: type });
  subjects.set(subject, versions);
  reply(res, 200, { id });
}

function version(res, subject, which) {
  const versions = subjects.get(subject);
  if (!versions) return notFound(res, 40401, `Subject '${subject}' not found.`);
  const v = which === 'latest' ? versions[versions.length - 1] : versions[Number(which) - 1];
  if (!v) return notFound(res, 40402, `Version ${which} not found.`);
  reply(res, 200, { subject, version: v.version, id: v.id, schema: v.schema, schemaType: v.schemaType });
}

function route(req, res, body) {
  const url = new URL(req.url, 'http://double');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const subject = parts[0] === 'subjects' || parts[0] === 'config' ? parts[1] : parts[0] === 'compatibility' ? parts[2] : undefined;
  if (args.log)
    fs.appendFileSync(args.log, JSON.stringify({ method: req.method, path: url.pathname, subject, auth: req.headers.authorization, body }) + '\n');
  if (mode === 'garbage') return reply(res, 200, '<html>this is not a schema registry</html>');
  if (mode === '500') return reply(res, 500, { error_code: 50001, message: 'Error in the backend data store' });
  let json = {};
  if (body) {
    try { json = JSON.parse(body); } catch (e) { return reply(res, 400, { error_code: 400, message: 'Unrecognized JSON' }); }
  }
  const m = req.method;
  if (m === 'POST' && parts[0] === 'subjects' && parts[2] === 'versions' && parts.length === 3) {
    if (mode === '409' || mode === 'incompatible')
      return reply(res, 409, { error_code: 409, message: 'Schema being registered is incompatible with an earlier schema for subject "' + subject + '"' });
    if (mode === '422') return reply(res, 422, { error_code: 42201, message: 'Invalid schema' });
    return register(res, subject, json);
  }
  if (m === 'POST' && parts[0] === 'compatibility' && parts[1] === 'subjects' && parts[3] === 'versions') {
    if (mode === 'incompatible') return reply(res, 200, { is_compatible: false });
    if (!subjects.has(subject)) return notFound(res, 40401, `Subject '${subject}' not found.`);
    return reply(res, 200, { is_compatible: true });
  }
  if (m === 'GET' && parts[0] === 'schemas' && parts[1] === 'ids' && parts.length === 3) {
    const s = schemas.get(Number(parts[2]));
    if (!s) return notFound(res, 40403, 'Schema not found');
    return reply(res, 200, s.schemaType === 'AVRO' ? { schema: s.schema } : { schema: s.schema, schemaType: s.schemaType });
  }
  if (m === 'GET' && parts[0] === 'subjects' && parts.length === 1) return reply(res, 200, [...subjects.keys()]);
  if (m === 'GET' && parts[0] === 'subjects' && parts[2] === 'versions' && parts.length === 3) {
    if (!subjects.has(subject)) return notFound(res, 40401, `Subject '${subject}' not found.`);
    return reply(res, 200, subjects.get(subject).map((v) => v.version));
  }
  if (m === 'GET' && parts[0] === 'subjects' && parts[2] === 'versions' && parts.length === 4) return version(res, subject, parts[3]);
  if (parts[0] === 'config' && parts.length === 2) {
    if (m === 'PUT') { configs.set(subject, json.compatibility); return reply(res, 200, json); }
    if (!configs.has(subject)) return notFound(res, 40401, `Subject '${subject}' not found.`);
    return reply(res, 200, { compatibilityLevel: configs.get(subject) });
  }
  reply(res, 404, { error_code: 404, message: `HTTP 404 Not Found: ${m} ${url.pathname}` });
}

const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    if (mode === 'slow') setTimeout(() => route(req, res, body), slowMs);
    else route(req, res, body);
  });
});
server.listen(0, '127.0.0.1', () => {
  const tmp = args['port-file'] + '.tmp';
  fs.writeFileSync(tmp, String(server.address().port));
  fs.renameSync(tmp, args['port-file']); // whole, so a reader never sees half a number
});
process.on('SIGTERM', () => process.exit(0));
