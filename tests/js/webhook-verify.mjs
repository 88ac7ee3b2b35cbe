// Verifies webhook requests with the official pusher npm SDK, as a Node
// backend would: new Pusher({...}).webhook({headers, rawBody}).isValid().
// Run by webhook/format_test.go: stdin is {"key", "secret", "requests":
// [{"headers" (lower-case names), "body", "valid" (the expected answer)}]};
// prints "ok N" when every answer is the expected one.
import Pusher from "pusher";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { key, secret, requests } = JSON.parse(input);
const pusher = new Pusher({ appId: "app1", key, secret, host: "127.0.0.1" });
let n = 0;
for (const [i, r] of requests.entries()) {
  const wh = pusher.webhook({ headers: r.headers, rawBody: r.body });
  const valid = wh.isValid();
  if (valid !== r.valid) {
    console.log(`request ${i}: isValid() = ${valid}, want ${r.valid}: ${r.body}`);
    process.exit(1);
  }
  if (valid && (!Array.isArray(wh.getEvents()) || typeof wh.getTime() !== "object")) {
    console.log(`request ${i}: events or time missing`);
    process.exit(1);
  }
  n++;
}
console.log(`ok ${n}`);
