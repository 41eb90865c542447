// node client.mjs --point MULTIADDR/p2p/PEER [--key FILE] --op OP...
//
// @canvas-js/libp2p-rendezvous's client on /rendezvous/1.0.0 running the
// operations in order on one rendezvous stream (as its `connect` does),
// printing one JSON line each, then {"me": PEER}:
//   register:NS[:TTL]   -> {"op","ok":true,"ttl"} or {"op","ok":false,"error"}
//   unregister:NS       -> {"op","ok":true} (UNREGISTER has no response)
//   discover:NS[:LIMIT] -> {"op","ok":true,"registrations":[{"peer","namespace","addresses"}]}
// `*` as NS sends no namespace. There is no discover-next: the canvas client
// never sends a cookie. Its discover leaves out the caller's own registration.
// --key keeps the peer's identity in FILE (created if missing), so a later
// run can unregister what an earlier one registered; without it, a new one.
import { parseArgs } from "node:util"
import { multiaddr } from "@multiformats/multiaddr"
import { rendezvousClient } from "@canvas-js/libp2p-rendezvous/client"
import { node, fail, loadKey } from "./common.mjs"

let args
try {
	args = parseArgs({
		options: {
			point: { type: "string" },
			op: { type: "string", multiple: true, default: [] },
			listen: { type: "string", default: "/ip4/127.0.0.1/tcp/0" },
			key: { type: "string" },
		},
	}).values
} catch (e) {
	fail(e.message)
}
if (args.point === undefined) fail("--point MULTIADDR/p2p/PEER is required")

const ops = args.op.map((op) => {
	const [kind, ns, arg, ...rest] = op.split(":")
	const number = arg === undefined ? undefined : Number(arg)
	const namespace = ns === "*" ? "" : ns
	const ok =
		ns !== undefined &&
		rest.length === 0 &&
		(number === undefined || Number.isSafeInteger(number)) &&
		(kind === "register" || kind === "discover" || (kind === "unregister" && arg === undefined))
	if (!ok) fail(`unknown op ${JSON.stringify(op)}`)
	return { op, kind, namespace, number }
})

const key = args.key === undefined ? undefined : await loadKey(args.key)
const libp2p = await node([args.listen], { rendezvous: rendezvousClient({ autoDiscover: false }) }, { privateKey: key })
const out = (v) => process.stdout.write(`${JSON.stringify(v)}\n`)
const error = (e) => (e instanceof Error ? e.message : String(e))

try {
	await libp2p.services.rendezvous.connect(multiaddr(args.point), async (point) => {
		for (const { op, kind, namespace, number } of ops) {
			try {
				if (kind === "register") {
					const { ttl } = await point.register(namespace, number === undefined ? {} : { ttl: number })
					out({ op, ok: true, ttl })
				} else if (kind === "unregister") {
					await point.unregister(namespace)
					out({ op, ok: true })
				} else {
					const peers = await point.discover(namespace, number === undefined ? {} : { limit: number })
					const registrations = peers.map((p) => ({
						peer: p.id.toString(),
						namespace,
						addresses: p.addresses.map((a) => a.multiaddr.toString()),
					}))
					out({ op, ok: true, registrations })
				}
			} catch (e) {
				out({ op, ok: false, error: error(e) })
			}
		}
	})
} catch (e) {
	process.stderr.write(`cannot reach the point: ${error(e)}\n`)
	await libp2p.stop()
	process.exit(3)
}
out({ me: libp2p.peerId.toString() })
// Give a last UNREGISTER (which has no answer) time to leave.
await new Promise((r) => setTimeout(r, 300))
await libp2p.stop()
process.exit(0)
