//! [`ChannelManager`]: the channels of one authority, by (context, peer),
//! bounded.
//!
//! The manager holds anything that is a [`ManagedChannel`]: the sans-IO
//! [`SecureChannel`] itself, or a driver's handle on a channel it runs
//! ([`crate::tcp::TcpChannelHandle`]). For a driver's handle,
//! [`ChannelManager::advance_epoch`] is what starts the rotation: the
//! channel's initiator begins the in-channel IKpsk2 handshake under the new
//! epoch's PSK as soon as it has that epoch's material, and its responder
//! closes the channel if no rotation comes within its grace period.

use hashbrown::HashMap;
use rdv_context::{AuthorityId, ContextId, Epoch};

use crate::channel::SecureChannel;

/// Default bound on channels.
pub const DEFAULT_MAX_CHANNELS: usize = 1024;

/// Why a channel was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager is full even after pruning finished channels.
    #[error("channel manager full ({0} channels)")]
    Full(usize),
}

/// What the manager needs of a channel.
pub trait ManagedChannel {
    /// The context.
    fn context_id(&self) -> ContextId;
    /// The peer.
    fn remote(&self) -> AuthorityId;
    /// The epoch of the keys in use.
    fn epoch(&self) -> Epoch;
    /// Closed or failed: it can be pruned.
    fn is_finished(&self) -> bool;
    /// The context moved to `epoch`: rotate to it (a no-op unless newer).
    fn mark_rotation_due(&mut self, epoch: Epoch);
}

impl ManagedChannel for SecureChannel {
    fn context_id(&self) -> ContextId {
        SecureChannel::context_id(self)
    }
    fn remote(&self) -> AuthorityId {
        SecureChannel::remote(self)
    }
    fn epoch(&self) -> Epoch {
        SecureChannel::epoch(self)
    }
    fn is_finished(&self) -> bool {
        SecureChannel::is_finished(self)
    }
    fn mark_rotation_due(&mut self, epoch: Epoch) {
        SecureChannel::mark_rotation_due(self, epoch);
    }
}

/// The channels of one authority (the seed's `ChannelManager`).
#[derive(Debug)]
pub struct ChannelManager<C = SecureChannel> {
    channels: HashMap<(ContextId, AuthorityId), C>,
    max: usize,
}

impl<C: ManagedChannel> Default for ChannelManager<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: ManagedChannel> ChannelManager<C> {
    /// A manager of at most [`DEFAULT_MAX_CHANNELS`].
    pub fn new() -> Self {
        Self::with_capacity_limit(DEFAULT_MAX_CHANNELS)
    }
    /// A manager of at most `max` channels.
    pub fn with_capacity_limit(max: usize) -> Self {
        Self {
            channels: HashMap::new(),
            max: max.max(1),
        }
    }
    /// Registers `channel`, replacing (and returning) the one with the same
    /// context and peer. When full, finished channels are pruned first.
    pub fn register(&mut self, channel: C) -> Result<Option<C>, ManagerError> {
        let key = (channel.context_id(), channel.remote());
        if !self.channels.contains_key(&key) && self.channels.len() >= self.max {
            self.prune();
            if self.channels.len() >= self.max {
                return Err(ManagerError::Full(self.max));
            }
        }
        Ok(self.channels.insert(key, channel))
    }
    /// The channel with `peer` in `context`.
    pub fn find_by_context_peer(&self, context: ContextId, peer: AuthorityId) -> Option<&C> {
        self.channels.get(&(context, peer))
    }
    /// The same, mutably.
    pub fn find_mut(&mut self, context: ContextId, peer: AuthorityId) -> Option<&mut C> {
        self.channels.get_mut(&(context, peer))
    }
    /// Marks every live channel of `context` older than `new_epoch` for
    /// rotation; returns their peers.
    pub fn advance_epoch(&mut self, context: ContextId, new_epoch: Epoch) -> Vec<AuthorityId> {
        let mut due = Vec::new();
        for ((c, peer), ch) in &mut self.channels {
            if *c == context && !ch.is_finished() && ch.epoch() < new_epoch {
                ch.mark_rotation_due(new_epoch);
                due.push(*peer);
            }
        }
        due
    }
    /// Drops closed and failed channels; returns how many.
    pub fn prune(&mut self) -> usize {
        let before = self.channels.len();
        self.channels.retain(|_, c| !c.is_finished());
        before - self.channels.len()
    }
    /// How many channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}
