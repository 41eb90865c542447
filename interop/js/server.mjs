// node server.mjs [--listen MULTIADDR]... [--db PATH]
//
// @canvas-js/libp2p-rendezvous's server on /rendezvous/1.0.0, printing one
// `listening on MULTIADDR/p2p/PEER` line per address, then serving until
// killed. Its SQLite store is in memory unless --db is given.
import { parseArgs } from "node:util"
import { rendezvousServer } from "@canvas-js/libp2p-rendezvous/server"
import { node, fail } from "./common.mjs"

let args
try {
	args = parseArgs({
		options: {
			listen: { type: "string", multiple: true, default: ["/ip4/127.0.0.1/tcp/0"] },
			db: { type: "string" },
		},
	}).values
} catch (e) {
	fail(e.message)
}

const libp2p = await node(args.listen, { rendezvous: rendezvousServer({ path: args.db ?? null }) }, {
	// js-libp2p refuses a host's 6th connection in a second (default 5): the
	// tests run one short-lived rdv process per command, all from loopback.
	connectionManager: { inboundConnectionThreshold: 1000 },
})
for (const ma of libp2p.getMultiaddrs()) {
	// getMultiaddrs() already ends each address in /p2p/<id>.
	process.stdout.write(`listening on ${ma.toString()}\n`)
}

const stop = async () => {
	await libp2p.stop()
	process.exit(0)
}
process.on("SIGINT", stop)
process.on("SIGTERM", stop)
