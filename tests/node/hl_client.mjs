// Runs the TypeScript SDK (@nktkas/hyperliquid) against hlbook and prints what it got as JSON.
//
//   node hl_client.mjs '{"http": "http://127.0.0.1:8000", "ws": "ws://127.0.0.1:8000/ws",
//                        "info": [["l2Book", {"coin": "BTC"}]],
//                        "subscribe": [["l2Book", {"coin": "BTC"}, 3]]}'
//
// "info" requests go over HTTP (InfoClient + HttpTransport) and over WebSocket post
// (InfoClient + WebSocketTransport); "subscribe" collects N events per subscription
// (SubscriptionClient). The SDK validates requests (and parses responses) itself: a
// shape it rejects is an error here.
import { HttpTransport, InfoClient, SubscriptionClient, WebSocketTransport } from "@nktkas/hyperliquid";
import WebSocket from "ws";

const plan = JSON.parse(process.argv[2]);
const out = { http: {}, post: {}, events: {}, errors: [] };
const timeout = setTimeout(() => {
  out.errors.push("timed out");
  console.log(JSON.stringify(out));
  process.exit(2);
}, plan.timeout ?? 30000);

const http = new InfoClient({ transport: new HttpTransport({ apiUrl: plan.http, timeout: 10000 }) });
const wsTransport = new WebSocketTransport({
  url: plan.ws,
  timeout: 10000,
  reconnect: { WebSocket, maxRetries: 0 },
});
const post = new InfoClient({ transport: wsTransport });
const subs = new SubscriptionClient({ transport: wsTransport });

async function call(client, method, params) {
  if (typeof client[method] !== "function") throw new Error(`no method ${method}`);
  return params === null ? await client[method]() : await client[method](params);
}

try {
  for (const [method, params] of plan.info ?? []) {
    const key = `${method}:${JSON.stringify(params)}`;
    out.http[key] = await call(http, method, params);
    out.post[key] = await call(post, method, params);
  }
  const waits = [];
  for (const [method, params, count] of plan.subscribe ?? []) {
    const key = `${method}:${JSON.stringify(params)}`;
    out.events[key] = [];
    waits.push(new Promise((resolve, reject) => {
      const listener = (data) => {
        if (out.events[key].length < count) out.events[key].push(data);
        if (out.events[key].length === count) resolve();
      };
      const args = params === null ? [listener] : [params, listener];
      subs[method](...args).catch(reject);
    }));
  }
  await Promise.all(waits);
} catch (error) {
  out.errors.push(String(error?.stack ?? error));
}
clearTimeout(timeout);
console.log(JSON.stringify(out));
await wsTransport.close().catch(() => {});
process.exit(0);
