// Verify one delivery with @upstash/qstash's Receiver, as a Node app would.
// stdin: {"signature", "body", "url", "current", "next"}; stdout: {"valid": bool, "error"?}.
import { Receiver } from "@upstash/qstash";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { signature, body, url, current, next } = JSON.parse(input);
const receiver = new Receiver({ currentSigningKey: current, nextSigningKey: next });
try {
  const valid = await receiver.verify({ signature, body, url });
  console.log(JSON.stringify({ valid }));
} catch (error) {
  console.log(JSON.stringify({ valid: false, error: String(error?.message ?? error) }));
}
