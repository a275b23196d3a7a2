// The official graphql-ws client: connects to the URL in argv[2] with the
// token in connection_init's payload (`Authorization: Bearer <argv[3]>`),
// subscribes to `greetings`, prints each result as a JSON line, then
// `complete`; on a closed connection prints `closed <code> <reason>` and
// exits 2.
import WebSocket from "ws";
import { createClient } from "graphql-ws";

const [url, token] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
  lazy: false,
  on: {
    closed: (event) => {
      if (event.code !== 1000) {
        console.log(`closed ${event.code} ${event.reason}`);
        process.exit(2);
      }
    },
  },
});

try {
  const results = client.iterate({
    query: "subscription { greetings(names: [\"a\", \"b\", \"c\"]) }",
  });
  for await (const result of results) {
    console.log(JSON.stringify(result));
  }
  console.log("complete");
  await client.dispose();
  process.exit(0);
} catch (err) {
  console.log(`error ${JSON.stringify(err?.message ?? err?.reason ?? String(err))}`);
  process.exit(3);
}
