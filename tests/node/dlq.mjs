// Retry DLQ entries with @upstash/qstash (the Python SDK 3.4.0 has no DLQ retry).
// stdin: {"baseUrl", "token", "dlqIds"}; stdout: JSON of what dlq.retry returned.
import { Client } from "@upstash/qstash";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { baseUrl, token, dlqIds } = JSON.parse(input);
const client = new Client({ baseUrl, token });
process.stdout.write(JSON.stringify(await client.dlq.retry(dlqIds)));
