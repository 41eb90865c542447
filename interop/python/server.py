"""py-libp2p 0.8.1's rendezvous server, for interop tests (issue 15, item 4).

Usage: .venv/bin/python server.py NAMESPACE

Starts a py-libp2p host serving `/rendezvous/1.0.0` (RendezvousService) on
loopback, registers a second py-libp2p host in NAMESPACE there through
py-libp2p's own client (an unsigned PeerInfo registration, as its schema
has it), then prints `registered <peer id> <ttl>` and
`listening on <multiaddr>/p2p/<peer id>` and serves until killed.

crates/rdv/tests/interop_py.rs drives it with rdv's client.
"""

import sys

import multiaddr
import trio
from libp2p import new_host
from libp2p.discovery.rendezvous import RendezvousClient, RendezvousService
from libp2p.peer.peerinfo import info_from_p2p_addr


async def main() -> None:
    ns = sys.argv[1]
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = new_host(listen_addrs=listen)
    async with host.run(listen_addrs=listen):
        RendezvousService(host)
        addr = host.get_addrs()[0]
        peer_listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
        peer = new_host(listen_addrs=peer_listen)
        async with peer.run(listen_addrs=peer_listen):
            await peer.connect(info_from_p2p_addr(addr))
            client = RendezvousClient(peer, host.get_id(), enable_refresh=False)
            ttl = await client.register(ns, 7200)
            print(f"registered {peer.get_id()} {ttl}", flush=True)
            print(f"listening on {addr}", flush=True)
            await trio.sleep_forever()


trio.run(main)
