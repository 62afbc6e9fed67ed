// The CommonJS side of the package (`require` condition: dist/herald.d.cts).
import herald = require('@herald-rt/client');

const client = new herald.Herald({ token: 't' });
client.on('connected', (m) => void m.data.client_id);
// @ts-expect-error: a misspelled event name
client.on('conected', () => {});
export {};
