// Promise.withResolvers is Node 22+; the libp2p 2.x stack calls it (Node 20 here).
Promise.withResolvers ??= function () { let resolve, reject; const promise = new this((a, b) => { resolve = a; reject = b }); return { promise, resolve, reject } }
