"""py-libp2p 0.8.1's rendezvous client, for interop tests (issue 15, item 4).

Usage: .venv/bin/python client.py --point MULTIADDR/p2p/PEER [--key FILE] --op OP...

Runs the operations in order against the point, with py-libp2p's own
`RendezvousClient` (each request on a stream of its own, as it does), and
prints one JSON line each, then {"me": PEER}:

  register:NS[:TTL]        -> {"op","ok":true,"ttl"} | {"op","ok":false,"error"}
  unregister:NS            -> {"op","ok":true} (UNREGISTER has no response)
  discover:NS[:LIMIT]      -> {"op","ok":true,"registrations":[{"peer","addresses"}],"cookie":BOOL}
  discover-all:NS:LIMIT    -> the same, every page followed by its cookie until
                              a page comes back without one (at most 1000
                              pages), with "pages": N
  subscribe:NS             -> a raw DISCOVER_SUBSCRIBE (py-libp2p's schema has
                              the type, its client does not send it):
                              {"op","ok":BOOL,"type","status","statusText"}, or
                              {"op","ok":false,"error"} if the stream closed

--key keeps the peer's Ed25519 seed in FILE (hex, created if missing), so a
later run can unregister what an earlier one registered.
"""

import argparse
import json
import os
import sys

import multiaddr
import trio
import varint
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.discovery.rendezvous import RendezvousClient
from libp2p.discovery.rendezvous.config import MAX_MESSAGE_SIZE, RENDEZVOUS_PROTOCOL
from libp2p.discovery.rendezvous.errors import RendezvousError
from libp2p.discovery.rendezvous.pb.rendezvous_pb2 import Message
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

STATUS = {v: k for k, v in Message.ResponseStatus.items()}
MAX_PAGES = 1000


def out(value: dict) -> None:
    print(json.dumps(value), flush=True)


def load_key(path: str | None):
    if path is None:
        return create_new_key_pair()
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex())
    with open(path) as f:
        return create_new_key_pair(bytes.fromhex(f.read().strip()))


def parse_op(op: str) -> tuple[str, str, int | None]:
    kind, _, rest = op.partition(":")
    ns, _, arg = rest.partition(":")
    known = {"register", "unregister", "discover", "discover-all", "subscribe"}
    if kind not in known or not ns or (arg and not arg.isdigit()):
        sys.exit(f"unknown op {op!r}")
    if kind == "discover-all" and not arg:
        sys.exit(f"{op!r}: discover-all needs a LIMIT")
    return kind, ns, int(arg) if arg else None


def peers_json(peers) -> list[dict]:
    return [
        {"peer": p.peer_id.to_base58(), "addresses": [str(a) for a in p.addrs]}
        for p in peers
    ]


async def subscribe(host, point, ns: str) -> dict:
    msg = Message()
    msg.type = Message.DISCOVER_SUBSCRIBE
    msg.discoverSubscribe.ns = ns
    msg.discoverSubscribe.supported_subscription_types.append("websocket")
    stream = await host.new_stream(point, [RENDEZVOUS_PROTOCOL])
    try:
        body = msg.SerializeToString()
        await stream.write(varint.encode(len(body)) + body)
        with trio.fail_after(10):
            raw = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_SIZE)
        answer = Message()
        answer.ParseFromString(raw)
        r = answer.discoverSubscribeResponse
        return {
            "ok": True,
            "type": Message.MessageType.Name(answer.type),
            "status": STATUS[r.status],
            "statusText": r.statusText,
        }
    finally:
        await stream.close()


async def run(args) -> None:
    ops = [(op, *parse_op(op)) for op in args.op]
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = new_host(key_pair=load_key(args.key), listen_addrs=listen)
    async with host.run(listen_addrs=listen):
        info = info_from_p2p_addr(multiaddr.Multiaddr(args.point))
        try:
            await host.connect(info)
        except Exception as e:  # noqa: BLE001 - any failure to reach it
            print(f"cannot reach the point: {e}", file=sys.stderr)
            sys.exit(3)
        client = RendezvousClient(host, info.peer_id, enable_refresh=False)
        for op, kind, ns, arg in ops:
            try:
                if kind == "register":
                    ttl = await client.register(ns, arg if arg is not None else 7200)
                    out({"op": op, "ok": True, "ttl": ttl})
                elif kind == "unregister":
                    await client.unregister(ns)
                    out({"op": op, "ok": True})
                elif kind == "discover":
                    peers, cookie = await client.discover(ns, arg or 100)
                    out({"op": op, "ok": True, "registrations": peers_json(peers),
                         "cookie": bool(cookie)})
                elif kind == "discover-all":
                    everyone, cookie, pages = [], b"", 0
                    while pages < MAX_PAGES:
                        peers, cookie = await client.discover(ns, arg, cookie)
                        pages += 1
                        everyone.extend(peers)
                        if not cookie or not peers:
                            break
                    out({"op": op, "ok": True, "registrations": peers_json(everyone),
                         "cookie": bool(cookie), "pages": pages})
                else:
                    out({"op": op, **await subscribe(host, info.peer_id, ns)})
            except RendezvousError as e:
                out({"op": op, "ok": False, "error": STATUS.get(e.status, str(e.status)),
                     "text": e.message})
            except Exception as e:  # noqa: BLE001 - reported, the test decides
                out({"op": op, "ok": False, "error": f"{type(e).__name__}: {e}"})
        out({"me": host.get_id().to_base58()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--point", required=True)
    parser.add_argument("--key")
    parser.add_argument("--op", action="append", default=[])
    trio.run(run, parser.parse_args())


main()
