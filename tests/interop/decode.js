// Decodes a Confluent-framed record with @kafkajs/confluent-schema-registry, an implementation
// independent of eskit's: node decode.js <registry-url> <file>. Prints the envelope as JSON
// (field names as in envelope.proto, 64-bit numbers as strings, bytes as base64).
'use strict';
const fs = require('fs');
const { SchemaRegistry } = require('@kafkajs/confluent-schema-registry');

(async () => {
  const [url, file] = process.argv.slice(2);
  const registry = new SchemaRegistry({ host: url });
  const msg = await registry.decode(fs.readFileSync(file));
  const out = {
    event_id: msg.eventId,
    aggregate_type: msg.aggregateType,
    aggregate_id: msg.aggregateId,
    version: String(msg.version),
    event_type: msg.eventType,
    payload: Buffer.from(msg.payload).toString('base64'),
    occurred_at_us: String(msg.occurredAtUs),
    command_id: msg.commandId,
    correlation_id: msg.correlationId,
    metadata: msg.metadata,
    schema_version: msg.schemaVersion,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  process.stderr.write(`decode.js: ${e.stack || e}\n`);
  process.exit(1);
});
