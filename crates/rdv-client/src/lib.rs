//! The client side of libp2p rendezvous (`/rendezvous/1.0.0`) as a sans-IO
//! state machine: it registers us at rendezvous points, keeps those
//! registrations alive, and discovers and caches other peers' registrations.
//!
//! [`Service`] never touches a socket, a clock, a thread or a random source.
//! Every input carries `now` (a [`Timestamp`]) and randomness comes from the
//! seed given to [`Service::new`], so a test can run a two-hour TTL in
//! microseconds and get the same result every time.
//!
//! # Driving the service
//!
//! A driver (an async task, a libp2p behaviour, a test) loops:
//!
//! 1. feed inputs: the user's calls ([`Service::register`],
//!    [`Service::unregister`], [`Service::discover`]), answers from the network
//!    ([`Service::handle_response`], [`Service::handle_failure`]) and the clock
//!    ([`Service::handle_timeout`] once [`Service::poll_timeout`] is due);
//! 2. drain outputs: [`Service::poll_transmit`] until `None` (send each message
//!    to its point on a new stream), then [`Service::poll_event`] until `None`;
//! 3. sleep until [`Service::poll_timeout`] or the next input, whichever is first.
//!
//! Each [`Transmit`] with `request: Some(id)` must end in exactly one
//! `handle_response(id, ..)` or `handle_failure(id, ..)` (the driver owns the
//! network timeout). A registration whose request never ends is never retried.
//! UNREGISTER has no response (`request: None`).
//!
//! Spec: libp2p/specs `rendezvous/README.md`.

#![deny(missing_docs)]

mod config;
mod event;
mod rng;
mod service;
#[cfg(test)]
mod tests;

pub use config::Config;
pub use event::{CachedRegistration, Event, OwnRegistration, Stats};
pub use rdv_wire::{Namespace, PeerId, ResponseStatus, Timestamp, Ttl};
pub use service::{ClientError, RequestId, Service, Transmit};
