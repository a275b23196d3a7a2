// A graphql-ws server (the official library, over `ws`): a `greetings`
// subscription that yields one message per name, addressed to the user the
// gateway vouches for (X-User-Id). It records what connection_init carried,
// so a test can check the gateway passed that message on.
// Prints `listening <port>` once ready; `init <json>` for each connection_init.
import { WebSocketServer } from "ws";
import { useServer } from "graphql-ws/use/ws";
import { buildSchema } from "graphql";

const schema = buildSchema(`
  type Query { hello: String }
  type Subscription { greetings(names: [String!]!): String }
`);

const roots = {
  query: { hello: () => "world" },
  subscription: {
    greetings: async function* ({ names }, ctx) {
      for (const n of names) {
        yield { greetings: `hello ${n} from ${ctx.user}` };
      }
    },
  },
};

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/graphql" });
useServer(
  {
    schema,
    roots,
    context: (ctx) => ({ user: ctx.extra.request.headers["x-user-id"] ?? "nobody" }),
    onConnect: (ctx) => {
      console.log(`init ${JSON.stringify(ctx.connectionParams ?? null)}`);
      return true;
    },
  },
  wss,
);
wss.on("listening", () => console.log(`listening ${wss.address().port}`));
process.on("SIGTERM", () => wss.close(() => process.exit(0)));
