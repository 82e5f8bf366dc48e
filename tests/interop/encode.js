// Encodes an envelope with @kafkajs/confluent-schema-registry under the schema id the registry
// holds for <subject> (eskit registered it): node encode.js <registry-url> <subject> <file>.
// The record is the one the test then reads with es_envelope_decode.
'use strict';
const fs = require('fs');
const { SchemaRegistry } = require('@kafkajs/confluent-schema-registry');

(async () => {
  const [url, subject, file] = process.argv.slice(2);
  const registry = new SchemaRegistry({ host: url });
  const id = await registry.getLatestSchemaId(subject);
  const bytes = await registry.encode(id, {
    eventId: '01890a5d-ac96-774b-bcce-b302099a8057',
    aggregateType: 'orders.order',
    aggregateId: 'o-node',
    version: 7,
    eventType: 'orders.v1.OrderConfirmed',
    payload: Buffer.from([0x0a, 0x03, 0x61, 0x62, 0x63]),
    occurredAtUs: 1700000000000001,
    commandId: 'cmd-node',
    correlationId: 'corr-node',
    metadata: { origin: 'kafkajs', 'trace-id': 't-1' },
    schemaVersion: 2,
  });
  fs.writeFileSync(file, bytes);
  process.stdout.write(`${id}\n`);
})().catch((e) => {
  process.stderr.write(`encode.js: ${e.stack || e}\n`);
  process.exit(1);
});
