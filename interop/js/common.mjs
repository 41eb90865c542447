// Shared by client.mjs and server.mjs: a js-libp2p 2.x node (TCP, Noise,
// Yamux, identify, ping) with @canvas-js/libp2p-rendezvous speaking the
// standard protocol id.

import "./polyfill.mjs" // first: before any library module is evaluated
import { createLibp2p } from "libp2p"
import { tcp } from "@libp2p/tcp"
import { noise } from "@chainsafe/libp2p-noise"
import { yamux } from "@chainsafe/libp2p-yamux"
import { identify } from "@libp2p/identify"
import { ping } from "@libp2p/ping"
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { RendezvousClient } from "@canvas-js/libp2p-rendezvous/client"
import { RendezvousServer } from "@canvas-js/libp2p-rendezvous/server"

// Both default to "/canvas/rendezvous/1.0.0"; the id is a static property
// read when the service registers its handler or opens a stream.
export const PROTOCOL = "/rendezvous/1.0.0"
RendezvousClient.protocol = PROTOCOL
RendezvousServer.protocol = PROTOCOL

export async function node(listen, services, { privateKey, connectionManager } = {}) {
	return await createLibp2p({
		privateKey,
		connectionManager,
		addresses: { listen },
		transports: [tcp()],
		connectionEncrypters: [noise()],
		streamMuxers: [yamux()],
		services: { identify: identify(), ping: ping(), ...services },
	})
}

/** Exits with a message on stderr. */
export function fail(message, code = 2) {
	process.stderr.write(`${message}\n`)
	process.exit(code)
}

/** The Ed25519 key in `path` (libp2p protobuf), created there on first use. */
export async function loadKey(path) {
	if (existsSync(path)) return privateKeyFromProtobuf(readFileSync(path))
	const key = await generateKeyPair("Ed25519")
	writeFileSync(path, privateKeyToProtobuf(key), { mode: 0o600 })
	return key
}
