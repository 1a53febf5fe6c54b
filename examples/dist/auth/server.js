// Stand-in for auth's build output (your build writes dist/auth), so that
// rollout plan -c examples/monorepo.yaml can check and pack it as a deploy would.
require("http").createServer((req, res) => res.end("ok\n")).listen(Number(process.env.PORT));
