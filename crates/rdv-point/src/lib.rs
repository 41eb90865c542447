//! The rendezvous point (server) of rdv: the registry of libp2p rendezvous
//! (`/rendezvous/1.0.0`) as a sans-IO state machine.
//!
//! - [`Point`]: the rules of the spec (who may register, TTL bounds, limits,
//!   cookie-paginated discovery, expiry), over a [`Store`].
//! - [`Store`]: where registrations live; [`MemoryStore`] here, SQL stores
//!   in their own crate.
//! - [`CookieKey`]: stateless authenticated cookies.
//!
//! No I/O, no clock, no randomness: time is an argument, the cookie key is
//! injected. Signature verification can be moved off the caller's thread
//! (see [`Point::needs_verification`]).

mod config;
mod cookie;
mod memory;
mod point;
pub mod store;

pub use config::{Config, ConfigError};
pub use cookie::{COOKIE_LEN, CookieKey, CookiePosition};
pub use memory::MemoryStore;
pub use point::{Event, Point, Verification, precheck};
pub use store::{Formats, Store};
