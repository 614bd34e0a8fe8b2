// Runs our Echo server in a process of its own: `bun test/support/echo-server.ts SOCKET`.
// Prints READY once listening; SIGTERM shuts down gracefully. Used by interop tests
// (Go client -> our server), the bad-input test (to watch the server's memory) and the
// benchmark.
import { Server } from "../../src/ttrpc/index.ts";
import { EchoDefinition } from "../interop/gen/echo.ts";
import { echoService } from "./echo-service.ts";

const path = process.argv[2];
if (!path) {
  console.error("usage: echo-server.ts SOCKET");
  process.exit(2);
}
const server = new Server().register(EchoDefinition, echoService);
server.listen(path);
const stop = () => server.shutdown().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
console.log("READY");
